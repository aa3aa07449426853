//! Table updates (`TableUpdate`), and the one-pass reader shared with view updates.
//!
//! Updates are read through [`UpdateWire`], a struct holding every key any action may
//! carry, rather than serde's internally tagged enums: those buffer the object first,
//! which is slower and cannot hold the opaque `sonic_rs::Value` defaults inside schemas.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::encryption::EncryptedKey;
use super::partition::UnboundPartitionSpec;
use super::schema::Schema;
use super::snapshot::{Snapshot, SnapshotRefType, SnapshotReference};
use super::sort::SortOrder;
use super::statistics::{PartitionStatisticsFile, StatisticsFile};
use super::view::ViewVersion;

/// One change to table metadata, as sent in a commit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "UpdateWire")]
pub enum TableUpdate {
    AssignUuid {
        uuid: String,
    },
    UpgradeFormatVersion {
        format_version: i32,
    },
    /// `last_column_id` is deprecated; the server computes it.
    AddSchema {
        schema: Schema,
        last_column_id: Option<i32>,
    },
    /// -1 means the schema added last in this commit.
    SetCurrentSchema {
        schema_id: i32,
    },
    AddSpec {
        spec: UnboundPartitionSpec,
    },
    /// -1 means the spec added last in this commit.
    SetDefaultSpec {
        spec_id: i32,
    },
    AddSortOrder {
        sort_order: SortOrder,
    },
    /// -1 means the sort order added last in this commit.
    SetDefaultSortOrder {
        sort_order_id: i32,
    },
    AddSnapshot {
        snapshot: Snapshot,
    },
    SetSnapshotRef {
        ref_name: String,
        reference: SnapshotReference,
    },
    RemoveSnapshots {
        snapshot_ids: Vec<i64>,
    },
    RemoveSnapshotRef {
        ref_name: String,
    },
    SetLocation {
        location: String,
    },
    SetProperties {
        updates: BTreeMap<String, String>,
    },
    RemoveProperties {
        removals: Vec<String>,
    },
    /// `snapshot_id` is deprecated and must match the file's when present.
    SetStatistics {
        snapshot_id: Option<i64>,
        statistics: StatisticsFile,
    },
    RemoveStatistics {
        snapshot_id: i64,
    },
    SetPartitionStatistics {
        partition_statistics: PartitionStatisticsFile,
    },
    RemovePartitionStatistics {
        snapshot_id: i64,
    },
    RemovePartitionSpecs {
        spec_ids: Vec<i32>,
    },
    RemoveSchemas {
        schema_ids: Vec<i32>,
    },
    AddEncryptionKey {
        encryption_key: EncryptedKey,
    },
    RemoveEncryptionKey {
        key_id: String,
    },
}

/// Every key of every table and view update action.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct UpdateWire {
    pub action: String,
    pub uuid: Option<String>,
    pub format_version: Option<i32>,
    pub schema: Option<Schema>,
    pub last_column_id: Option<i32>,
    pub schema_id: Option<i32>,
    pub spec: Option<UnboundPartitionSpec>,
    pub spec_id: Option<i32>,
    pub sort_order: Option<SortOrder>,
    pub sort_order_id: Option<i32>,
    pub snapshot: Option<Snapshot>,
    pub ref_name: Option<String>,
    pub snapshot_id: Option<i64>,
    #[serde(rename = "type")]
    pub ref_type: Option<SnapshotRefType>,
    pub min_snapshots_to_keep: Option<i32>,
    pub max_snapshot_age_ms: Option<i64>,
    pub max_ref_age_ms: Option<i64>,
    pub snapshot_ids: Option<Vec<i64>>,
    pub location: Option<String>,
    /// The spec says `updates`; early Java wrote `updated`.
    #[serde(alias = "updated")]
    pub updates: Option<BTreeMap<String, String>>,
    /// The spec says `removals`; early Java wrote `removed`.
    #[serde(alias = "removed")]
    pub removals: Option<Vec<String>>,
    pub statistics: Option<StatisticsFile>,
    pub partition_statistics: Option<PartitionStatisticsFile>,
    pub spec_ids: Option<Vec<i32>>,
    pub schema_ids: Option<Vec<i32>>,
    pub encryption_key: Option<EncryptedKey>,
    pub key_id: Option<String>,
    pub view_version: Option<ViewVersion>,
    pub view_version_id: Option<i32>,
}

/// Unwraps a key the action requires.
pub(crate) fn need<T>(v: Option<T>, action: &str, key: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("Invalid {action} update: missing field `{key}`"))
}

impl TryFrom<UpdateWire> for TableUpdate {
    type Error = String;

    fn try_from(w: UpdateWire) -> Result<TableUpdate, String> {
        use TableUpdate::*;
        let a = w.action.as_str();
        Ok(match a {
            "assign-uuid" => AssignUuid { uuid: need(w.uuid, a, "uuid")? },
            "upgrade-format-version" => {
                UpgradeFormatVersion { format_version: need(w.format_version, a, "format-version")? }
            }
            "add-schema" => AddSchema { schema: need(w.schema, a, "schema")?, last_column_id: w.last_column_id },
            "set-current-schema" => SetCurrentSchema { schema_id: need(w.schema_id, a, "schema-id")? },
            "add-spec" => AddSpec { spec: need(w.spec, a, "spec")? },
            "set-default-spec" => SetDefaultSpec { spec_id: need(w.spec_id, a, "spec-id")? },
            "add-sort-order" => AddSortOrder { sort_order: need(w.sort_order, a, "sort-order")? },
            "set-default-sort-order" => {
                SetDefaultSortOrder { sort_order_id: need(w.sort_order_id, a, "sort-order-id")? }
            }
            "add-snapshot" => AddSnapshot { snapshot: need(w.snapshot, a, "snapshot")? },
            "set-snapshot-ref" => SetSnapshotRef {
                ref_name: need(w.ref_name, a, "ref-name")?,
                reference: SnapshotReference {
                    snapshot_id: need(w.snapshot_id, a, "snapshot-id")?,
                    ref_type: need(w.ref_type, a, "type")?,
                    min_snapshots_to_keep: w.min_snapshots_to_keep,
                    max_snapshot_age_ms: w.max_snapshot_age_ms,
                    max_ref_age_ms: w.max_ref_age_ms,
                },
            },
            "remove-snapshots" => RemoveSnapshots { snapshot_ids: need(w.snapshot_ids, a, "snapshot-ids")? },
            "remove-snapshot-ref" => RemoveSnapshotRef { ref_name: need(w.ref_name, a, "ref-name")? },
            "set-location" => SetLocation { location: need(w.location, a, "location")? },
            "set-properties" => SetProperties { updates: need(w.updates, a, "updates")? },
            "remove-properties" => RemoveProperties { removals: need(w.removals, a, "removals")? },
            "set-statistics" => {
                SetStatistics { snapshot_id: w.snapshot_id, statistics: need(w.statistics, a, "statistics")? }
            }
            "remove-statistics" => RemoveStatistics { snapshot_id: need(w.snapshot_id, a, "snapshot-id")? },
            "set-partition-statistics" => SetPartitionStatistics {
                partition_statistics: need(w.partition_statistics, a, "partition-statistics")?,
            },
            "remove-partition-statistics" => {
                RemovePartitionStatistics { snapshot_id: need(w.snapshot_id, a, "snapshot-id")? }
            }
            "remove-partition-specs" => RemovePartitionSpecs { spec_ids: need(w.spec_ids, a, "spec-ids")? },
            "remove-schemas" => RemoveSchemas { schema_ids: need(w.schema_ids, a, "schema-ids")? },
            "add-encryption-key" => AddEncryptionKey { encryption_key: need(w.encryption_key, a, "encryption-key")? },
            "remove-encryption-key" => RemoveEncryptionKey { key_id: need(w.key_id, a, "key-id")? },
            _ => return Err(format!("Unknown table update action: {a}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::snapshot::SnapshotRefType;
    use crate::metadata::test_support::parse;

    /// One update of every action, as Java and PyIceberg clients write them.
    const ALL_ACTIONS: &str = r#"[
        {"action":"assign-uuid","uuid":"2cc52516-5e73-41f2-b139-545d41a4e151"},
        {"action":"upgrade-format-version","format-version":2},
        {"action":"add-schema","schema":{"type":"struct","schema-id":1,"fields":[{"id":1,"name":"x","required":true,"type":"long","initial-default":5}]},"last-column-id":1},
        {"action":"set-current-schema","schema-id":-1},
        {"action":"add-spec","spec":{"spec-id":1,"fields":[{"name":"x_bucket","transform":"bucket[4]","source-id":1}]}},
        {"action":"set-default-spec","spec-id":-1},
        {"action":"add-sort-order","sort-order":{"order-id":1,"fields":[{"transform":"identity","source-id":1,"direction":"asc","null-order":"nulls-first"}]}},
        {"action":"set-default-sort-order","sort-order-id":-1},
        {"action":"add-snapshot","snapshot":{"snapshot-id":1,"timestamp-ms":1,"sequence-number":1,"manifest-list":"m","summary":{"operation":"append"}}},
        {"action":"set-snapshot-ref","ref-name":"main","snapshot-id":1,"type":"branch","max-ref-age-ms":10},
        {"action":"remove-snapshots","snapshot-ids":[1,2]},
        {"action":"remove-snapshot-ref","ref-name":"tag"},
        {"action":"set-location","location":"s3://b/t"},
        {"action":"set-properties","updates":{"a":"1"}},
        {"action":"remove-properties","removals":["a"]},
        {"action":"set-statistics","snapshot-id":1,"statistics":{"snapshot-id":1,"statistics-path":"p","file-size-in-bytes":1,"file-footer-size-in-bytes":1,"blob-metadata":[]}},
        {"action":"remove-statistics","snapshot-id":1},
        {"action":"set-partition-statistics","partition-statistics":{"snapshot-id":1,"statistics-path":"p","file-size-in-bytes":1}},
        {"action":"remove-partition-statistics","snapshot-id":1},
        {"action":"remove-partition-specs","spec-ids":[0]},
        {"action":"remove-schemas","schema-ids":[0]},
        {"action":"add-encryption-key","encryption-key":{"key-id":"k","encrypted-key-metadata":"AA=="}},
        {"action":"remove-encryption-key","key-id":"k"}
    ]"#;

    #[test]
    fn every_action_parses() {
        let updates: Vec<TableUpdate> = parse(ALL_ACTIONS);
        assert_eq!(updates.len(), 23);
        let TableUpdate::AddSchema { schema, last_column_id } = &updates[2] else { panic!() };
        assert_eq!(*last_column_id, Some(1));
        assert!(schema.fields[0].initial_default.is_some());
        let TableUpdate::SetSnapshotRef { ref_name, reference } = &updates[9] else { panic!() };
        assert_eq!(
            (ref_name.as_str(), reference.ref_type, reference.max_ref_age_ms),
            ("main", SnapshotRefType::Branch, Some(10))
        );
        assert_eq!(updates[22], TableUpdate::RemoveEncryptionKey { key_id: "k".into() });
    }

    #[test]
    fn action_may_come_last_and_old_key_names_are_accepted() {
        let u: TableUpdate = parse(
            r#"{"schema":{"type":"struct","fields":[{"id":1,"name":"d","required":false,"type":"int","write-default":{"1":2}}]},"action":"add-schema"}"#,
        );
        assert!(matches!(u, TableUpdate::AddSchema { last_column_id: None, .. }));
        let u: TableUpdate = parse(r#"{"action":"set-properties","updated":{"k":"v"}}"#);
        assert_eq!(u, TableUpdate::SetProperties { updates: [("k".to_owned(), "v".to_owned())].into() });
        let u: TableUpdate = parse(r#"{"action":"remove-properties","removed":["k"]}"#);
        assert_eq!(u, TableUpdate::RemoveProperties { removals: vec!["k".into()] });
    }

    #[test]
    fn unknown_actions_and_missing_fields_are_errors() {
        let err = sonic_rs::from_str::<TableUpdate>(r#"{"action":"drop-table"}"#).unwrap_err().to_string();
        assert!(err.contains("Unknown table update action: drop-table"), "{err}");
        let err = sonic_rs::from_str::<TableUpdate>(r#"{"action":"set-current-schema"}"#).unwrap_err().to_string();
        assert!(err.contains("schema-id"), "{err}");
        assert!(sonic_rs::from_str::<TableUpdate>(r#"{"uuid":"x"}"#).is_err());
        assert!(sonic_rs::from_str::<TableUpdate>(r#"{"action":"add-view-version","view-version-id":1}"#).is_err());
    }
}
