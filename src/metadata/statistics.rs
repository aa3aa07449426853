//! Table and partition statistics files attached to snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Puffin statistics file for one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatisticsFile {
    pub snapshot_id: i64,
    pub statistics_path: String,
    pub file_size_in_bytes: i64,
    pub file_footer_size_in_bytes: i64,
    /// Base64, from early writers of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_metadata: Option<String>,
    pub blob_metadata: Vec<BlobMetadata>,
}

/// One blob of a statistics file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlobMetadata {
    #[serde(rename = "type")]
    pub blob_type: String,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub fields: Vec<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// A partition statistics file for one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionStatisticsFile {
    pub snapshot_id: i64,
    pub statistics_path: String,
    pub file_size_in_bytes: i64,
}
