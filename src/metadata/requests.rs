//! Table request bodies: create, commit, and multi-table commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de::null_as_default;

use super::partition::UnboundPartitionSpec;
use super::requirement::TableRequirement;
use super::schema::Schema;
use super::sort::SortOrder;
use super::update::TableUpdate;

/// `CreateTableRequest`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateTableRequest {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    pub schema: Schema,
    #[serde(default)]
    pub partition_spec: Option<UnboundPartitionSpec>,
    #[serde(default)]
    pub write_order: Option<SortOrder>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stage_create: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: BTreeMap<String, String>,
}

/// A namespace and a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIdentifier {
    pub namespace: Vec<String>,
    pub name: String,
}

/// `CommitTableRequest`: requirements to check, then updates to apply in order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CommitTableRequest {
    #[serde(default)]
    pub identifier: Option<TableIdentifier>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub requirements: Vec<TableRequirement>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub updates: Vec<TableUpdate>,
}

/// `CommitTransactionRequest`: commits to several tables, each with its identifier.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CommitTransactionRequest {
    pub table_changes: Vec<CommitTableRequest>,
}
