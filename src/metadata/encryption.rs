//! Encryption keys stored in v3 table metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A wrapped key; the key material is base64 and opaque to the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EncryptedKey {
    pub key_id: String,
    pub encrypted_key_metadata: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_by_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}
