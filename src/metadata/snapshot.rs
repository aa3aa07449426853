//! Snapshots, branch and tag references, and the two history logs.

use serde::{Deserialize, Serialize};

use super::string_map::StringMap;

/// One snapshot of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    /// Absent in v1; written only when above zero, as Java does.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sequence_number: i64,
    pub snapshot_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<i64>,
    pub timestamp_ms: i64,
    /// String map with the required `operation` key.
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub summary: StringMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_list: Option<String>,
    /// Embedded manifest paths of early v1 snapshots without a manifest list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_row_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A named branch or tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotReference {
    pub snapshot_id: i64,
    #[serde(rename = "type")]
    pub ref_type: SnapshotRefType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_snapshots_to_keep: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshot_age_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ref_age_ms: Option<i64>,
}

/// Branch or tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotRefType {
    Branch,
    Tag,
}

impl SnapshotReference {
    /// A branch with default retention.
    pub fn branch(snapshot_id: i64) -> SnapshotReference {
        SnapshotReference {
            snapshot_id,
            ref_type: SnapshotRefType::Branch,
            min_snapshots_to_keep: None,
            max_snapshot_age_ms: None,
            max_ref_age_ms: None,
        }
    }
}

/// When a snapshot became the current one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLogEntry {
    pub timestamp_ms: i64,
    pub snapshot_id: i64,
}

/// A previous metadata file and when it was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataLogEntry {
    pub timestamp_ms: i64,
    pub metadata_file: String,
}
