//! Commit requirements: what the client assumed about the table it changed.

use serde::{Deserialize, Serialize};

use super::error::{conflict, MetadataError};
use super::table::TableMetadata;

/// A `TableRequirement`; a failed one is a conflict (409).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TableRequirement {
    /// The table must not exist yet (create transactions).
    AssertCreate,
    AssertTableUuid {
        uuid: String,
    },
    /// `snapshot-id: null` (or absent) means the ref must not exist.
    #[serde(rename_all = "kebab-case")]
    AssertRefSnapshotId {
        r#ref: String,
        #[serde(default)]
        snapshot_id: Option<i64>,
    },
    #[serde(rename_all = "kebab-case")]
    AssertLastAssignedFieldId {
        last_assigned_field_id: i32,
    },
    #[serde(rename_all = "kebab-case")]
    AssertCurrentSchemaId {
        current_schema_id: i32,
    },
    #[serde(rename_all = "kebab-case")]
    AssertLastAssignedPartitionId {
        last_assigned_partition_id: i32,
    },
    #[serde(rename_all = "kebab-case")]
    AssertDefaultSpecId {
        default_spec_id: i32,
    },
    #[serde(rename_all = "kebab-case")]
    AssertDefaultSortOrderId {
        default_sort_order_id: i32,
    },
}

impl TableRequirement {
    /// Checks the requirement against an existing table.
    pub fn check(&self, base: &TableMetadata) -> Result<(), MetadataError> {
        use TableRequirement::*;
        match self {
            AssertCreate => conflict!("Requirement failed: table already exists"),
            AssertTableUuid { uuid } if !uuid.eq_ignore_ascii_case(&base.table_uuid) => {
                conflict!("Requirement failed: UUID does not match: expected {} != {uuid}", base.table_uuid)
            }
            AssertRefSnapshotId { r#ref, snapshot_id } => match (base.refs.get(r#ref), snapshot_id) {
                (Some(_), None) => {
                    conflict!("Requirement failed: branch or tag {ref} was created concurrently")
                }
                (Some(found), Some(id)) if found.snapshot_id != *id => conflict!(
                    "Requirement failed: branch or tag {ref} has changed: expected id {id} != {}",
                    found.snapshot_id
                ),
                (None, Some(id)) => {
                    conflict!("Requirement failed: branch or tag {ref} is missing, expected {id}")
                }
                _ => Ok(()),
            },
            AssertLastAssignedFieldId { last_assigned_field_id: id } if *id != base.last_column_id => conflict!(
                "Requirement failed: last assigned field id changed: expected id {id} != {}",
                base.last_column_id
            ),
            AssertCurrentSchemaId { current_schema_id: id } if *id != base.current_schema_id => {
                conflict!("Requirement failed: current schema changed: expected id {id} != {}", base.current_schema_id)
            }
            AssertLastAssignedPartitionId { last_assigned_partition_id: id } if *id != base.last_partition_id => {
                conflict!(
                    "Requirement failed: last assigned partition id changed: expected id {id} != {}",
                    base.last_partition_id
                )
            }
            AssertDefaultSpecId { default_spec_id: id } if *id != base.default_spec_id => conflict!(
                "Requirement failed: default partition spec changed: expected id {id} != {}",
                base.default_spec_id
            ),
            AssertDefaultSortOrderId { default_sort_order_id: id } if *id != base.default_sort_order_id => conflict!(
                "Requirement failed: default sort order changed: expected id {id} != {}",
                base.default_sort_order_id
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_support::{parse, table};

    fn check(json: &str) -> Result<(), MetadataError> {
        parse::<TableRequirement>(json).check(&table("v2_full"))
    }

    #[test]
    fn every_requirement_passes_when_it_holds() {
        for json in [
            r#"{"type":"assert-table-uuid","uuid":"8F2B3C4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D"}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":7001}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"release-1","snapshot-id":7000}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"new-branch","snapshot-id":null}"#,
            r#"{"type":"assert-last-assigned-field-id","last-assigned-field-id":13}"#,
            r#"{"type":"assert-current-schema-id","current-schema-id":1}"#,
            r#"{"type":"assert-last-assigned-partition-id","last-assigned-partition-id":1002}"#,
            r#"{"type":"assert-default-spec-id","default-spec-id":1}"#,
            r#"{"type":"assert-default-sort-order-id","default-sort-order-id":1}"#,
        ] {
            assert_eq!(check(json), Ok(()), "{json}");
        }
    }

    #[test]
    fn every_requirement_conflicts_when_it_fails() {
        for (json, message) in [
            (r#"{"type":"assert-create"}"#, "already exists"),
            (r#"{"type":"assert-table-uuid","uuid":"00000000-0000-4000-8000-000000000000"}"#, "UUID does not match"),
            (r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":7000}"#, "has changed"),
            (r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":null}"#, "created concurrently"),
            (r#"{"type":"assert-ref-snapshot-id","ref":"main"}"#, "created concurrently"),
            (r#"{"type":"assert-ref-snapshot-id","ref":"gone","snapshot-id":7000}"#, "is missing"),
            (r#"{"type":"assert-last-assigned-field-id","last-assigned-field-id":12}"#, "last assigned field id"),
            (r#"{"type":"assert-current-schema-id","current-schema-id":0}"#, "current schema"),
            (r#"{"type":"assert-last-assigned-partition-id","last-assigned-partition-id":1001}"#, "partition id"),
            (r#"{"type":"assert-default-spec-id","default-spec-id":0}"#, "default partition spec"),
            (r#"{"type":"assert-default-sort-order-id","default-sort-order-id":0}"#, "default sort order"),
        ] {
            match check(json) {
                Err(MetadataError::Conflict(m)) => assert!(m.contains(message), "{json}: {m}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_requirement_types_do_not_parse() {
        assert!(sonic_rs::from_str::<TableRequirement>(r#"{"type":"assert-nothing"}"#).is_err());
        assert!(sonic_rs::from_str::<TableRequirement>(r#"{"type":"assert-current-schema-id"}"#).is_err());
    }

    #[test]
    fn null_snapshot_id_is_written_back_as_null() {
        let r = TableRequirement::AssertRefSnapshotId { r#ref: "main".into(), snapshot_id: None };
        assert_eq!(
            sonic_rs::to_string(&r).unwrap(),
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":null}"#
        );
    }
}
