//! Metadata for a new table from a `CreateTableRequest`, with fresh ids as Java assigns them.

use std::collections::{BTreeMap, HashMap};

use super::error::{invalid, MetadataError};
use super::partition::{PartitionField, PartitionSpec, PARTITION_DATA_ID_START};
use super::requests::CreateTableRequest;
use super::schema::{ListType, MapType, Schema, StructField, StructType, Type};
use super::sort::{SortField, SortOrder};
use super::table::{TableMetadata, MAX_FORMAT_VERSION};

/// The table property that picks the format version at creation; never stored.
pub(crate) const FORMAT_VERSION_PROPERTY: &str = "format-version";

/// Format version of new tables when the request does not pick one.
const DEFAULT_FORMAT_VERSION: u8 = 2;

/// Properties that describe the metadata itself and are never stored (Java's `RESERVED_PROPERTIES`).
const RESERVED_PROPERTIES: [&str; 9] = [
    FORMAT_VERSION_PROPERTY,
    "uuid",
    "snapshot-count",
    "current-snapshot-id",
    "current-snapshot-summary",
    "current-snapshot-timestamp-ms",
    "current-schema",
    "default-partition-spec",
    "default-sort-order",
];

/// Builds the first metadata of a table: schema ids reassigned 1..n, partition field
/// ids from 1000, partition and sort sources remapped, reserved properties dropped.
pub fn new_table_metadata(
    req: &CreateTableRequest,
    location: &str,
    table_uuid: &str,
    now_ms: i64,
) -> Result<TableMetadata, MetadataError> {
    let format_version = match req.properties.get(FORMAT_VERSION_PROPERTY) {
        None => DEFAULT_FORMAT_VERSION,
        Some(v) => parse_format_version(v)?,
    };
    let location = location.trim_end_matches('/');
    if location.is_empty() {
        return invalid!("Table location is required");
    }

    let mut fresh = FreshIds::default();
    let fields = fresh.struct_fields(&req.schema.fields);
    let identifier_field_ids = req
        .schema
        .identifier_field_ids
        .iter()
        .map(|&id| fresh.lookup(id, "identifier field"))
        .collect::<Result<_, _>>()?;
    let schema = Schema { schema_id: 0, identifier_field_ids, fields };
    schema.validate(format_version).map_err(MetadataError::Invalid)?;

    let spec_fields = req.partition_spec.as_ref().map_or(&[][..], |s| &s.fields);
    let spec = PartitionSpec {
        spec_id: 0,
        fields: spec_fields
            .iter()
            .zip(PARTITION_DATA_ID_START..)
            .map(|(f, field_id)| {
                let source_id = fresh.lookup(f.source_id, "partition source")?;
                Ok(PartitionField { name: f.name.clone(), transform: f.transform.clone(), source_id, field_id })
            })
            .collect::<Result<_, MetadataError>>()?,
    };
    spec.check_compatible(&schema).map_err(MetadataError::Invalid)?;

    let sort_order = match &req.write_order {
        Some(order) if !order.is_unsorted() => SortOrder {
            order_id: 1,
            fields: order
                .fields
                .iter()
                .map(|f| Ok(SortField { source_id: fresh.lookup(f.source_id, "sort source")?, ..f.clone() }))
                .collect::<Result<_, MetadataError>>()?,
        },
        _ => SortOrder::unsorted(),
    };
    sort_order.check_compatible(&schema).map_err(MetadataError::Invalid)?;

    let properties: BTreeMap<String, String> = req
        .properties
        .iter()
        .filter(|(k, _)| !RESERVED_PROPERTIES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    Ok(TableMetadata {
        format_version,
        table_uuid: table_uuid.to_owned(),
        location: location.to_owned(),
        last_sequence_number: 0,
        last_updated_ms: now_ms,
        last_column_id: fresh.last,
        current_schema_id: 0,
        schemas: vec![schema],
        default_spec_id: 0,
        last_partition_id: spec.last_assigned_field_id(),
        partition_specs: vec![spec],
        default_sort_order_id: sort_order.order_id,
        sort_orders: vec![sort_order],
        properties,
        current_snapshot_id: None,
        next_row_id: 0,
        encryption_keys: Vec::new(),
        refs: BTreeMap::new(),
        snapshots: Vec::new(),
        statistics: Vec::new(),
        partition_statistics: Vec::new(),
        snapshot_log: Vec::new(),
        metadata_log: Vec::new(),
    })
}

/// Parses a requested format version; anything but 1, 2 or 3 is invalid.
pub(crate) fn parse_format_version(v: &str) -> Result<u8, MetadataError> {
    match v.trim().parse::<u8>() {
        Ok(n) if (1..=MAX_FORMAT_VERSION).contains(&n) => Ok(n),
        _ => invalid!("Unsupported format version: {v} (supported: 1 to {MAX_FORMAT_VERSION})"),
    }
}

/// Assigns ids 1, 2, ... like Java's `TypeUtil.assignFreshIds`: a struct's own fields
/// first, then each field's nested type; a list's element id, a map's key then value id,
/// before their types. Remembers old → new so references can follow.
#[derive(Default)]
struct FreshIds {
    last: i32,
    /// `None` marks an old id used twice, which no reference can name unambiguously.
    old_to_new: HashMap<i32, Option<i32>>,
}

impl FreshIds {
    fn next(&mut self, old: i32) -> i32 {
        self.last += 1;
        let new = self.last;
        self.old_to_new.entry(old).and_modify(|e| *e = None).or_insert(Some(new));
        new
    }

    fn lookup(&self, old: i32, what: &str) -> Result<i32, MetadataError> {
        match self.old_to_new.get(&old) {
            Some(Some(new)) => Ok(*new),
            Some(None) => invalid!("Ambiguous {what} id {old}: used by several fields of the schema"),
            None => invalid!("Cannot find {what} column {old} in the schema"),
        }
    }

    fn struct_fields(&mut self, fields: &[StructField]) -> Vec<StructField> {
        let ids: Vec<i32> = fields.iter().map(|f| self.next(f.id)).collect();
        fields
            .iter()
            .zip(ids)
            .map(|(f, id)| StructField {
                id,
                name: f.name.clone(),
                required: f.required,
                field_type: self.nested(&f.field_type),
                doc: f.doc.clone(),
                initial_default: f.initial_default.clone(),
                write_default: f.write_default.clone(),
            })
            .collect()
    }

    fn nested(&mut self, ty: &Type) -> Type {
        match ty {
            Type::Primitive(p) => Type::Primitive(p.clone()),
            Type::Struct(s) => Type::Struct(StructType { fields: self.struct_fields(&s.fields) }),
            Type::List(l) => {
                let element_id = self.next(l.element_id);
                let element = self.nested(&l.element);
                Type::List(Box::new(ListType { element_id, element, element_required: l.element_required }))
            }
            Type::Map(m) => {
                let key_id = self.next(m.key_id);
                let value_id = self.next(m.value_id);
                let key = self.nested(&m.key);
                let value = self.nested(&m.value);
                Type::Map(Box::new(MapType { key_id, key, value_id, value, value_required: m.value_required }))
            }
        }
    }
}
