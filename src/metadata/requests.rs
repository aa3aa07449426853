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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_support::parse;

    #[test]
    fn create_request_parses_with_and_without_optional_parts() {
        let req: CreateTableRequest = parse(
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":true,"type":"string"}]},
                "partition-spec":{"fields":[{"name":"a","transform":"identity","source-id":1}]},
                "write-order":{"order-id":1,"fields":[]},"stage-create":true,"properties":{"format-version":"3"}}"#,
        );
        assert!(req.stage_create);
        assert_eq!(req.partition_spec.unwrap().fields[0].field_id, None);
        let req: CreateTableRequest = parse(
            r#"{"name":"t","location":null,"schema":{"type":"struct","fields":[]},"properties":null,"stage-create":null}"#,
        );
        assert!(!req.stage_create && req.properties.is_empty() && req.location.is_none());
    }

    #[test]
    fn commit_requests_parse() {
        let req: CommitTableRequest = parse(
            r#"{"identifier":{"namespace":["a","b"],"name":"t"},
                "requirements":[{"type":"assert-create"}],"updates":[{"action":"set-location","location":"s3://x"}]}"#,
        );
        assert_eq!(req.identifier.unwrap().namespace, ["a", "b"]);
        assert_eq!(req.requirements, [TableRequirement::AssertCreate]);
        let tx: CommitTransactionRequest =
            parse(r#"{"table-changes":[{"identifier":{"namespace":[],"name":"t"},"requirements":[],"updates":[]}]}"#);
        assert_eq!(tx.table_changes.len(), 1);
    }
}
