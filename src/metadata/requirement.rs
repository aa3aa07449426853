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
    AssertTableUuid { uuid: String },
    /// `snapshot-id: null` (or absent) means the ref must not exist.
    #[serde(rename_all = "kebab-case")]
    AssertRefSnapshotId {
        r#ref: String,
        #[serde(default)]
        snapshot_id: Option<i64>,
    },
    #[serde(rename_all = "kebab-case")]
    AssertLastAssignedFieldId { last_assigned_field_id: i32 },
    #[serde(rename_all = "kebab-case")]
    AssertCurrentSchemaId { current_schema_id: i32 },
    #[serde(rename_all = "kebab-case")]
    AssertLastAssignedPartitionId { last_assigned_partition_id: i32 },
    #[serde(rename_all = "kebab-case")]
    AssertDefaultSpecId { default_spec_id: i32 },
    #[serde(rename_all = "kebab-case")]
    AssertDefaultSortOrderId { default_sort_order_id: i32 },
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
                (Some(_), None) => conflict!("Requirement failed: branch or tag {ref} was created concurrently"),
                (Some(found), Some(id)) if found.snapshot_id != *id => conflict!(
                    "Requirement failed: branch or tag {ref} has changed: expected id {id} != {}",
                    found.snapshot_id
                ),
                (None, Some(id)) => conflict!("Requirement failed: branch or tag {ref} is missing, expected {id}"),
                _ => Ok(()),
            },
            AssertLastAssignedFieldId { last_assigned_field_id: id } if *id != base.last_column_id => conflict!(
                "Requirement failed: last assigned field id changed: expected id {id} != {}",
                base.last_column_id
            ),
            AssertCurrentSchemaId { current_schema_id: id } if *id != base.current_schema_id => conflict!(
                "Requirement failed: current schema changed: expected id {id} != {}",
                base.current_schema_id
            ),
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
