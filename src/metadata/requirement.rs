//! Commit requirements: what the client assumed about the table it changed.

use std::borrow::Cow;
use std::collections::BTreeMap;

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

/// What requirements read of a table, whether it is the owned model or
/// the stored JSON a commit edits in place (`edit.rs`).
pub(crate) trait RequirementBase {
    fn table_uuid(&self) -> &str;
    fn ref_snapshot_id(&self, name: &str) -> Option<i64>;
    /// Last column id, current schema, last partition id, default spec, default sort order.
    fn ids(&self) -> [i32; 5];
}

impl RequirementBase for TableMetadata {
    fn table_uuid(&self) -> &str {
        &self.table_uuid
    }

    fn ref_snapshot_id(&self, name: &str) -> Option<i64> {
        self.refs.get(name).map(|r| r.snapshot_id)
    }

    fn ids(&self) -> [i32; 5] {
        [
            self.last_column_id,
            self.current_schema_id,
            self.last_partition_id,
            self.default_spec_id,
            self.default_sort_order_id,
        ]
    }
}

impl TableRequirement {
    /// Checks the requirement against an existing table.
    pub(crate) fn check(&self, base: &impl RequirementBase) -> Result<(), MetadataError> {
        use TableRequirement::*;
        let [last_column_id, current_schema_id, last_partition_id, default_spec_id, default_sort_order_id] = base.ids();
        match self {
            AssertCreate => table_exists(),
            AssertTableUuid { uuid } => check_uuid(uuid, base.table_uuid()),
            AssertRefSnapshotId { r#ref, snapshot_id } => check_ref(r#ref, *snapshot_id, base.ref_snapshot_id(r#ref)),
            AssertLastAssignedFieldId { last_assigned_field_id: id } if *id != last_column_id => {
                conflict!("Requirement failed: last assigned field id changed: expected id {id} != {last_column_id}")
            }
            AssertCurrentSchemaId { current_schema_id: id } if *id != current_schema_id => {
                conflict!("Requirement failed: current schema changed: expected id {id} != {current_schema_id}")
            }
            AssertLastAssignedPartitionId { last_assigned_partition_id: id } if *id != last_partition_id => {
                conflict!(
                    "Requirement failed: last assigned partition id changed: expected id {id} != {last_partition_id}"
                )
            }
            AssertDefaultSpecId { default_spec_id: id } if *id != default_spec_id => {
                conflict!("Requirement failed: default partition spec changed: expected id {id} != {default_spec_id}")
            }
            AssertDefaultSortOrderId { default_sort_order_id: id } if *id != default_sort_order_id => {
                conflict!("Requirement failed: default sort order changed: expected id {id} != {default_sort_order_id}")
            }
            _ => Ok(()),
        }
    }
}

fn table_exists() -> Result<(), MetadataError> {
    conflict!("Requirement failed: table already exists")
}

fn check_uuid(expected: &str, found: &str) -> Result<(), MetadataError> {
    if expected.eq_ignore_ascii_case(found) {
        return Ok(());
    }
    conflict!("Requirement failed: UUID does not match: expected {found} != {expected}")
}

/// `expected: None` asserts that the ref does not exist.
fn check_ref(name: &str, expected: Option<i64>, found: Option<i64>) -> Result<(), MetadataError> {
    match (found, expected) {
        (Some(_), None) => conflict!("Requirement failed: branch or tag {name} was created concurrently"),
        (Some(found), Some(id)) if found != id => {
            conflict!("Requirement failed: branch or tag {name} has changed: expected id {id} != {found}")
        }
        (None, Some(id)) => conflict!("Requirement failed: branch or tag {name} is missing, expected {id}"),
        _ => Ok(()),
    }
}

/// The few fields of stored table metadata that decide the requirements
/// concurrent writers trip over; everything else is skipped unparsed.
#[derive(Deserialize)]
struct RequirementView<'a> {
    #[serde(rename = "table-uuid", borrow, default)]
    table_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refs: Option<BTreeMap<Cow<'a, str>, RefView>>,
}

#[derive(Deserialize)]
struct RefView {
    #[serde(rename = "snapshot-id")]
    snapshot_id: i64,
}

/// The first failed requirement, when `stored` (a table's metadata JSON)
/// decides it from its own `table-uuid` and `refs` without a full parse: a
/// commit that lost a race on a large table then costs a scan, not a parse.
/// Requirements are taken in order, as [`TableRequirement::check`] takes
/// them; `None` once one needs more than these fields (or all hold), and
/// the full check on the parsed table decides. Present fields are what the
/// parsed table holds (normalizing only fills in absent ones), so whatever
/// this reports, the full check reports too.
pub fn quick_conflict(requirements: &[TableRequirement], stored: &[u8]) -> Option<MetadataError> {
    use TableRequirement::*;
    let view: RequirementView<'_> = sonic_rs::from_slice(stored).ok()?;
    for requirement in requirements {
        let checked = match requirement {
            AssertCreate => table_exists(),
            AssertTableUuid { uuid } => check_uuid(uuid, view.table_uuid.as_deref()?),
            AssertRefSnapshotId { r#ref, snapshot_id } => {
                let found = view.refs.as_ref()?.get(r#ref.as_str()).map(|r| r.snapshot_id);
                check_ref(r#ref, *snapshot_id, found)
            }
            _ => return None,
        };
        if let Err(e) = checked {
            return Some(e);
        }
    }
    None
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
    fn quick_check_reports_only_what_the_full_check_reports() {
        let requirements = [
            r#"{"type":"assert-create"}"#,
            r#"{"type":"assert-table-uuid","uuid":"8F2B3C4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D"}"#,
            r#"{"type":"assert-table-uuid","uuid":"00000000-0000-4000-8000-000000000000"}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":7001}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":7000}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":3051729675574597004}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":null}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"gone","snapshot-id":7000}"#,
            r#"{"type":"assert-ref-snapshot-id","ref":"new-branch","snapshot-id":null}"#,
            r#"{"type":"assert-current-schema-id","current-schema-id":0}"#,
            r#"{"type":"assert-current-schema-id","current-schema-id":1}"#,
        ]
        .map(parse::<TableRequirement>);
        let mut decided = 0;
        // Every ordered pair, against tables with and without stored refs and uuid.
        for name in ["v2_full", "v1_current", "v1_legacy", "v2_pyiceberg", "v3_row_lineage"] {
            let stored = crate::metadata::test_support::fixture(name);
            let table = table(name);
            for a in &requirements {
                for b in &requirements {
                    let pair = [a.clone(), b.clone()];
                    let full = pair.iter().try_for_each(|r| r.check(&table));
                    match quick_conflict(&pair, stored.as_bytes()) {
                        Some(e) => {
                            decided += 1;
                            assert_eq!(full, Err(e), "{name}: {pair:?}");
                        }
                        None => assert!(
                            full.is_ok() || pair.iter().any(|r| undecidable(r, stored)),
                            "{name}: {pair:?} conflicts ({full:?}) but the quick check did not say so"
                        ),
                    }
                }
            }
        }
        assert!(decided > 50, "the quick check decided only {decided} cases");
    }

    /// Whether the quick check must defer `r` to the full check for `stored`.
    fn undecidable(r: &TableRequirement, stored: &str) -> bool {
        match r {
            TableRequirement::AssertCreate => false,
            TableRequirement::AssertTableUuid { .. } => !stored.contains("\"table-uuid\""),
            TableRequirement::AssertRefSnapshotId { .. } => !stored.contains("\"refs\""),
            _ => true,
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
