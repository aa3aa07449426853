//! Table metadata for format versions 1 to 3, and its JSON form.
//!
//! Reading accepts everything the spec allows, including v1 files that only carry
//! `schema`/`partition-spec` and lack sort orders or refs, and normalizes it. Writing
//! follows Java's `TableMetadataParser`: v1-only fields for v1, `last-sequence-number`
//! from v2, `next-row-id` and a null `current-snapshot-id` from v3.

use std::collections::BTreeMap;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};

use super::encryption::EncryptedKey;
use super::partition::{PartitionField, PartitionSpec, UnboundPartitionField, UnboundPartitionSpec};
use super::schema::Schema;
use super::snapshot::{MetadataLogEntry, Snapshot, SnapshotLogEntry, SnapshotReference};
use super::sort::SortOrder;
use super::statistics::{PartitionStatisticsFile, StatisticsFile};

/// The branch that tracks the current snapshot.
pub const MAIN_BRANCH: &str = "main";

/// Newest format version this catalog reads and writes.
pub const MAX_FORMAT_VERSION: u8 = 3;

/// Iceberg table metadata, normalized.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "TableMetadataWire")]
pub struct TableMetadata {
    pub format_version: u8,
    /// v1 files without one get a fresh uuid when read (Java assigns one on its first commit).
    pub table_uuid: String,
    pub location: String,
    pub last_sequence_number: i64,
    pub last_updated_ms: i64,
    pub last_column_id: i32,
    pub schemas: Vec<Schema>,
    pub current_schema_id: i32,
    pub partition_specs: Vec<PartitionSpec>,
    pub default_spec_id: i32,
    pub last_partition_id: i32,
    pub sort_orders: Vec<SortOrder>,
    pub default_sort_order_id: i32,
    pub properties: BTreeMap<String, String>,
    pub current_snapshot_id: Option<i64>,
    /// Meaningful from v3; 0 before.
    pub next_row_id: i64,
    pub encryption_keys: Vec<EncryptedKey>,
    pub refs: BTreeMap<String, SnapshotReference>,
    pub snapshots: Vec<Snapshot>,
    pub statistics: Vec<StatisticsFile>,
    pub partition_statistics: Vec<PartitionStatisticsFile>,
    pub snapshot_log: Vec<SnapshotLogEntry>,
    pub metadata_log: Vec<MetadataLogEntry>,
}

impl TableMetadata {
    /// The current schema.
    pub fn current_schema(&self) -> Option<&Schema> {
        self.schema(self.current_schema_id)
    }

    /// The schema with this id.
    pub fn schema(&self, id: i32) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.schema_id == id)
    }

    /// The default partition spec.
    pub fn default_spec(&self) -> Option<&PartitionSpec> {
        self.spec(self.default_spec_id)
    }

    /// The partition spec with this id.
    pub fn spec(&self, id: i32) -> Option<&PartitionSpec> {
        self.partition_specs.iter().find(|s| s.spec_id == id)
    }

    /// The default sort order.
    pub fn default_sort_order(&self) -> Option<&SortOrder> {
        self.sort_order(self.default_sort_order_id)
    }

    /// The sort order with this id.
    pub fn sort_order(&self, id: i32) -> Option<&SortOrder> {
        self.sort_orders.iter().find(|o| o.order_id == id)
    }

    /// The snapshot with this id.
    pub fn snapshot(&self, id: i64) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    /// The current snapshot of the main branch.
    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        self.current_snapshot_id.and_then(|id| self.snapshot(id))
    }

    /// A view that serializes like the metadata but keeps only snapshots some ref points at
    /// (the REST `snapshots=refs` mode).
    pub fn referenced_snapshots_only(&self) -> impl Serialize + '_ {
        self.wire(true)
    }

    fn wire(&self, refs_only: bool) -> TableMetadataOut<'_> {
        let v1 = self.format_version == 1;
        TableMetadataOut {
            format_version: self.format_version,
            table_uuid: &self.table_uuid,
            location: &self.location,
            last_sequence_number: (!v1).then_some(self.last_sequence_number),
            last_updated_ms: self.last_updated_ms,
            last_column_id: self.last_column_id,
            schema: if v1 { self.current_schema() } else { None },
            current_schema_id: self.current_schema_id,
            schemas: &self.schemas,
            partition_spec: if v1 { self.default_spec().map(|s| s.fields.as_slice()) } else { None },
            default_spec_id: self.default_spec_id,
            partition_specs: &self.partition_specs,
            last_partition_id: self.last_partition_id,
            default_sort_order_id: self.default_sort_order_id,
            sort_orders: &self.sort_orders,
            properties: &self.properties,
            current_snapshot_id: match self.current_snapshot_id {
                None if self.format_version < 3 => Some(-1),
                id => id,
            },
            next_row_id: (self.format_version >= 3).then_some(self.next_row_id),
            encryption_keys: &self.encryption_keys,
            refs: &self.refs,
            snapshots: SnapshotList { snapshots: &self.snapshots, refs: refs_only.then_some(&self.refs) },
            statistics: &self.statistics,
            partition_statistics: &self.partition_statistics,
            snapshot_log: &self.snapshot_log,
            metadata_log: &self.metadata_log,
        }
    }
}

impl Serialize for TableMetadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire(false).serialize(s)
    }
}

/// The written form, in Java's key order.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct TableMetadataOut<'a> {
    format_version: u8,
    table_uuid: &'a str,
    location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sequence_number: Option<i64>,
    last_updated_ms: i64,
    last_column_id: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a Schema>,
    current_schema_id: i32,
    schemas: &'a [Schema],
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_spec: Option<&'a [PartitionField]>,
    default_spec_id: i32,
    partition_specs: &'a [PartitionSpec],
    last_partition_id: i32,
    default_sort_order_id: i32,
    sort_orders: &'a [SortOrder],
    properties: &'a BTreeMap<String, String>,
    /// -1 for "none" before v3, null from v3.
    current_snapshot_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_row_id: Option<i64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    encryption_keys: &'a [EncryptedKey],
    refs: &'a BTreeMap<String, SnapshotReference>,
    snapshots: SnapshotList<'a>,
    statistics: &'a [StatisticsFile],
    partition_statistics: &'a [PartitionStatisticsFile],
    snapshot_log: &'a [SnapshotLogEntry],
    metadata_log: &'a [MetadataLogEntry],
}

/// All snapshots, or with `refs` only those a ref points at.
struct SnapshotList<'a> {
    snapshots: &'a [Snapshot],
    refs: Option<&'a BTreeMap<String, SnapshotReference>>,
}

impl Serialize for SnapshotList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for snap in self.snapshots {
            if self.refs.map_or(true, |refs| refs.values().any(|r| r.snapshot_id == snap.snapshot_id)) {
                seq.serialize_element(snap)?;
            }
        }
        seq.end()
    }
}

/// The read form: everything a version may omit is optional.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct TableMetadataWire {
    format_version: u8,
    table_uuid: Option<String>,
    location: String,
    last_sequence_number: Option<i64>,
    last_updated_ms: i64,
    last_column_id: i32,
    schema: Option<Schema>,
    schemas: Option<Vec<Schema>>,
    current_schema_id: Option<i32>,
    partition_spec: Option<Vec<UnboundPartitionField>>,
    partition_specs: Option<Vec<UnboundPartitionSpec>>,
    default_spec_id: Option<i32>,
    last_partition_id: Option<i32>,
    sort_orders: Option<Vec<SortOrder>>,
    default_sort_order_id: Option<i32>,
    properties: Option<BTreeMap<String, String>>,
    current_snapshot_id: Option<i64>,
    next_row_id: Option<i64>,
    encryption_keys: Option<Vec<EncryptedKey>>,
    refs: Option<BTreeMap<String, SnapshotReference>>,
    snapshots: Option<Vec<Snapshot>>,
    statistics: Option<Vec<StatisticsFile>>,
    partition_statistics: Option<Vec<PartitionStatisticsFile>>,
    snapshot_log: Option<Vec<SnapshotLogEntry>>,
    metadata_log: Option<Vec<MetadataLogEntry>>,
}

fn required<T>(v: Option<T>, field: &str, version: u8) -> Result<T, String> {
    v.ok_or_else(|| format!("{field} must exist in format v{version}"))
}

impl TryFrom<TableMetadataWire> for TableMetadata {
    type Error = String;

    fn try_from(w: TableMetadataWire) -> Result<TableMetadata, String> {
        let v = w.format_version;
        if !(1..=MAX_FORMAT_VERSION).contains(&v) {
            return Err(format!("Cannot read unsupported format version {v}"));
        }
        let legacy = v == 1;
        let (schemas, current_schema_id) = match (w.schemas, w.schema) {
            (Some(schemas), _) => (schemas, required(w.current_schema_id, "current-schema-id", v)?),
            (None, Some(schema)) if legacy => {
                let id = schema.schema_id;
                (vec![schema], id)
            }
            _ => return Err(format!("schemas must exist in format v{v}")),
        };
        if !schemas.iter().any(|s| s.schema_id == current_schema_id) {
            return Err(format!("Cannot find schema with current-schema-id={current_schema_id} from schemas"));
        }
        let (partition_specs, default_spec_id) = match (w.partition_specs, w.partition_spec) {
            (Some(specs), _) => {
                let specs = specs
                    .into_iter()
                    .map(|s| {
                        let id = required(s.spec_id, "spec-id", v)?;
                        s.bind_sequential(id)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                (specs, required(w.default_spec_id, "default-spec-id", v)?)
            }
            (None, Some(fields)) if legacy => (vec![UnboundPartitionSpec { spec_id: None, fields }.bind_sequential(0)?], 0),
            _ => return Err(format!("partition-specs must exist in format v{v}")),
        };
        let last_partition_id = match w.last_partition_id {
            Some(id) => id,
            None if legacy => partition_specs.iter().map(PartitionSpec::last_assigned_field_id).max().unwrap_or(999),
            None => return Err(format!("last-partition-id must exist in format v{v}")),
        };
        let (sort_orders, default_sort_order_id) = match w.sort_orders {
            Some(orders) => (orders, required(w.default_sort_order_id, "default-sort-order-id", v)?),
            None if legacy => (vec![SortOrder::unsorted()], SortOrder::UNSORTED_ORDER_ID),
            None => return Err(format!("sort-orders must exist in format v{v}")),
        };
        let current_snapshot_id = w.current_snapshot_id.filter(|&id| id != -1);
        let snapshots = w.snapshots.unwrap_or_default();
        if current_snapshot_id.is_some_and(|id| !snapshots.iter().any(|s| s.snapshot_id == id)) {
            return Err("Invalid table metadata: Cannot find current version".to_owned());
        }
        let refs = match (w.refs, current_snapshot_id) {
            (Some(refs), _) => refs,
            (None, Some(id)) => BTreeMap::from([(MAIN_BRANCH.to_owned(), SnapshotReference::branch(id))]),
            (None, None) => BTreeMap::new(),
        };
        if let Some((name, r)) = refs.iter().find(|(_, r)| !snapshots.iter().any(|s| s.snapshot_id == r.snapshot_id)) {
            return Err(format!("Snapshot {} for reference {name} does not exist", r.snapshot_id));
        }
        if refs.get(MAIN_BRANCH).is_some_and(|main| Some(main.snapshot_id) != current_snapshot_id) {
            return Err("Current snapshot id does not match the main branch".to_owned());
        }
        let table_uuid = match w.table_uuid {
            Some(uuid) => uuid,
            None if legacy => uuid::Uuid::new_v4().to_string(),
            None => return Err(format!("table-uuid must exist in format v{v}")),
        };
        Ok(TableMetadata {
            format_version: v,
            table_uuid,
            location: w.location,
            last_sequence_number: if legacy { 0 } else { required(w.last_sequence_number, "last-sequence-number", v)? },
            last_updated_ms: w.last_updated_ms,
            last_column_id: w.last_column_id,
            schemas,
            current_schema_id,
            partition_specs,
            default_spec_id,
            last_partition_id,
            sort_orders,
            default_sort_order_id,
            properties: w.properties.unwrap_or_default(),
            current_snapshot_id,
            next_row_id: if v >= 3 { required(w.next_row_id, "next-row-id", v)? } else { 0 },
            encryption_keys: w.encryption_keys.unwrap_or_default(),
            refs,
            snapshots,
            statistics: w.statistics.unwrap_or_default(),
            partition_statistics: w.partition_statistics.unwrap_or_default(),
            snapshot_log: w.snapshot_log.unwrap_or_default(),
            metadata_log: w.metadata_log.unwrap_or_default(),
        })
    }
}
