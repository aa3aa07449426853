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
use super::error::{invalid, MetadataError};
use super::partition::{PartitionField, PartitionSpec, UnboundPartitionField, UnboundPartitionSpec};
use super::schema::Schema;
use super::snapshot::{MetadataLogEntry, Snapshot, SnapshotLogEntry, SnapshotReference};
use super::sort::SortOrder;
use super::statistics::{PartitionStatisticsFile, StatisticsFile};

/// The branch that tracks the current snapshot.
pub(crate) const MAIN_BRANCH: &str = "main";

/// Newest format version this catalog reads and writes.
pub(crate) const MAX_FORMAT_VERSION: u8 = 3;

/// Format version of new tables that do not pick one.
pub(crate) const DEFAULT_FORMAT_VERSION: u8 = 2;

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
    /// Metadata with no schema, spec, order or snapshot yet: where creations start.
    pub(crate) fn empty(format_version: u8, table_uuid: String, location: String, now_ms: i64) -> TableMetadata {
        TableMetadata {
            format_version,
            table_uuid,
            location,
            last_sequence_number: 0,
            last_updated_ms: now_ms,
            last_column_id: 0,
            schemas: Vec::new(),
            current_schema_id: 0,
            partition_specs: Vec::new(),
            default_spec_id: 0,
            last_partition_id: 0,
            sort_orders: Vec::new(),
            default_sort_order_id: 0,
            properties: BTreeMap::new(),
            current_snapshot_id: None,
            next_row_id: 0,
            encryption_keys: Vec::new(),
            refs: BTreeMap::new(),
            snapshots: Vec::new(),
            statistics: Vec::new(),
            partition_statistics: Vec::new(),
            snapshot_log: Vec::new(),
            metadata_log: Vec::new(),
        }
    }

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

/// A table or view location without trailing slashes, as Java stores it; empty is invalid.
pub(crate) fn trim_location(location: &str) -> Result<&str, MetadataError> {
    match location.trim_end_matches('/') {
        "" => invalid!("Invalid location: {location:?}"),
        trimmed => Ok(trimmed),
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
            (None, Some(fields)) if legacy => {
                (vec![UnboundPartitionSpec { spec_id: None, fields }.bind_sequential(0)?], 0)
            }
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

#[cfg(test)]
mod tests {
    use sonic_rs::JsonValueTrait;

    use super::*;
    use crate::metadata::schema::Type;
    use crate::metadata::test_support::{fixture, parse, table, to_value, value};

    #[test]
    fn java_written_metadata_round_trips_exactly() {
        for name in ["v1_current", "v2_full", "v3_row_lineage", "v3_empty"] {
            let md = table(name);
            assert_eq!(to_value(&md), value(fixture(name)), "{name}");
            let again: TableMetadata = parse(&sonic_rs::to_string(&md).unwrap());
            assert_eq!(again, md, "{name}");
        }
    }

    #[test]
    fn nested_types_and_defaults_survive() {
        let md = table("v2_full");
        let schema = md.current_schema().unwrap();
        assert_eq!(schema.identifier_field_ids, [1, 2]);
        assert_eq!(schema.highest_field_id(), 13);
        let Type::Map(map) = &schema.fields[5].field_type else { panic!("not a map") };
        assert_eq!((map.key_id, map.value_id, map.value_required), (10, 11, false));
        let Type::Struct(value) = &map.value else { panic!("not a struct") };
        assert_eq!(value.fields[0].field_type, Type::Primitive(crate::metadata::PrimitiveType("decimal(18,4)".into())));

        let v3 = table("v3_row_lineage");
        let reading = &v3.schemas[0].fields[2];
        assert_eq!(reading.initial_default.as_ref().and_then(|v| v.as_str()), Some("0.000"));
        assert_eq!(v3.schemas[0].fields[6].initial_default.as_ref().and_then(|v| v.as_i64()), Some(i64::MAX));
        assert_eq!(v3.next_row_id, 1500);
        assert_eq!(v3.encryption_keys[1].encrypted_by_id.as_deref(), Some("kek-1"));
    }

    #[test]
    fn v1_without_schemas_specs_orders_or_refs_is_normalized() {
        let md = table("v1_legacy");
        assert_eq!(md.schemas.len(), 1);
        assert_eq!(md.current_schema_id, 0);
        let ids: Vec<i32> = md.partition_specs[0].fields.iter().map(|f| f.field_id).collect();
        assert_eq!(ids, [1000, 1001]);
        assert_eq!(md.last_partition_id, 1001);
        assert_eq!(md.sort_orders, [SortOrder::unsorted()]);
        assert_eq!(md.refs[MAIN_BRANCH], SnapshotReference::branch(3051729675574597004));
        assert_eq!(md.last_sequence_number, 0);
        assert_eq!(
            md.snapshots[0].manifests.as_deref(),
            Some(&["hdfs://nn:8020/warehouse/db/events/metadata/a1-m0.avro".to_owned()][..])
        );

        let out = to_value(&md);
        assert_eq!(out["schema"], out["schemas"][0]);
        assert_eq!(out["partition-spec"], out["partition-specs"][0]["fields"]);
        assert_eq!(out["partition-spec"][1]["field-id"], 1001);
        assert_eq!(out["current-snapshot-id"], 3051729675574597004i64);
        assert!(out.get("last-sequence-number").is_none());
        assert!(out.get("next-row-id").is_none());
        assert_eq!(out["snapshots"][0]["manifests"][0], "hdfs://nn:8020/warehouse/db/events/metadata/a1-m0.avro");
        assert!(out["snapshots"][0].get("sequence-number").is_none());
    }

    #[test]
    fn pyiceberg_metadata_reads_and_writes_the_spec_form() {
        let md = table("v2_pyiceberg");
        assert_eq!(md.current_snapshot_id, None);
        let mut expected = value(fixture("v2_pyiceberg"));
        // Java-style output: empty identifier ids omitted, no current snapshot written as -1.
        expected["schemas"][0].as_object_mut().unwrap().remove("identifier-field-ids");
        expected["current-snapshot-id"] = (-1).into();
        assert_eq!(to_value(&md), expected);
    }

    #[test]
    fn missing_current_snapshot_is_minus_one_before_v3_and_null_from_v3() {
        let mut md = table("v3_empty");
        assert!(to_value(&md)["current-snapshot-id"].is_null());
        md.format_version = 2;
        assert_eq!(to_value(&md)["current-snapshot-id"], -1);
    }

    #[test]
    fn refs_only_view_keeps_referenced_snapshots() {
        let mut md = table("v2_full");
        assert_eq!(to_value(&md.referenced_snapshots_only()), to_value(&md));
        md.refs.remove("release-1");
        let out = to_value(&md.referenced_snapshots_only());
        let ids: Vec<i64> =
            out["snapshots"].as_array().unwrap().iter().map(|s| s["snapshot-id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [7001, 7002]);
        assert_eq!(out["snapshot-log"], to_value(&md)["snapshot-log"]);
    }

    #[test]
    fn missing_uuid_is_assigned_in_v1_and_rejected_later() {
        let v1 = fixture("v1_legacy").replace("\"table-uuid\" : \"4b6c0b2a-8c1e-4a5e-9f0e-0d6f3c1b7a21\",", "");
        let md: TableMetadata = parse(&v1);
        assert!(uuid::Uuid::parse_str(&md.table_uuid).is_ok());
        let v2 = fixture("v2_full").replace("\"table-uuid\" : \"8f2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d\",", "");
        assert!(sonic_rs::from_str::<TableMetadata>(&v2).unwrap_err().to_string().contains("table-uuid"));
    }

    #[test]
    fn invalid_metadata_is_rejected() {
        let cases = [
            ("\"format-version\" : 2", "\"format-version\" : 4", "unsupported format version"),
            ("\"current-schema-id\" : 1", "\"current-schema-id\" : 7", "current-schema-id=7"),
            ("\"current-snapshot-id\" : 7001", "\"current-snapshot-id\" : 7003", "Cannot find current version"),
            ("\"last-partition-id\" : 1002,", "", "last-partition-id must exist"),
            (
                "\"snapshot-id\" : 7001,\n      \"type\" : \"branch\"",
                "\"snapshot-id\" : 7000,\n      \"type\" : \"branch\"",
                "main branch",
            ),
        ];
        for (from, to, message) in cases {
            let json = fixture("v2_full").replacen(from, to, 1);
            assert_ne!(json, fixture("v2_full"), "{from}");
            let err = sonic_rs::from_str::<TableMetadata>(&json).unwrap_err().to_string();
            assert!(err.contains(message), "{message}: {err}");
        }
    }

    #[test]
    fn malformed_nested_types_are_rejected() {
        let json = fixture("v2_full").replacen("\"element-id\" : 9,", "", 1);
        let err = sonic_rs::from_str::<TableMetadata>(&json).unwrap_err().to_string();
        assert!(err.contains("element-id"), "{err}");
        let json = fixture("v2_full").replacen("\"type\" : \"list\"", "\"type\" : \"array\"", 1);
        assert!(sonic_rs::from_str::<TableMetadata>(&json).is_err());
    }
}
