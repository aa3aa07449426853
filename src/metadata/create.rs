//! Metadata for a new table from a `CreateTableRequest`, with fresh ids as Java assigns them.

use std::collections::{BTreeMap, HashMap};

use super::error::{invalid, MetadataError};
use super::partition::{PartitionField, PartitionSpec, PARTITION_DATA_ID_START};
use super::requests::CreateTableRequest;
use super::schema::{ListType, MapType, Schema, StructField, StructType, Type};
use super::sort::{SortField, SortOrder};
use super::table::{trim_location, TableMetadata, DEFAULT_FORMAT_VERSION, MAX_FORMAT_VERSION};

/// The table property that picks the format version at creation; never stored.
pub(crate) const FORMAT_VERSION_PROPERTY: &str = "format-version";

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
    let location = trim_location(location)?;

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
        last_column_id: fresh.last,
        schemas: vec![schema],
        last_partition_id: spec.last_assigned_field_id(),
        partition_specs: vec![spec],
        default_sort_order_id: sort_order.order_id,
        sort_orders: vec![sort_order],
        properties,
        ..TableMetadata::empty(format_version, table_uuid.to_owned(), location.to_owned(), now_ms)
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
            Some(None) => {
                invalid!("Ambiguous {what} id {old}: used by several fields of the schema")
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::test_support::{parse, to_value};

    /// A request as a client would send it, with ids that are not fresh.
    fn request(properties: &str) -> CreateTableRequest {
        parse(&format!(
            r#"{{"name":"t","schema":{{"type":"struct","schema-id":7,"identifier-field-ids":[10],"fields":[
                {{"id":10,"name":"id","required":true,"type":"long"}},
                {{"id":20,"name":"point","required":false,"type":{{"type":"struct","fields":[
                    {{"id":21,"name":"x","required":true,"type":"double"}},
                    {{"id":22,"name":"tags","required":false,"type":{{"type":"list","element-id":23,"element":{{"type":"struct","fields":[
                        {{"id":24,"name":"k","required":false,"type":"string"}}]}},"element-required":false}}}}]}}}},
                {{"id":30,"name":"attrs","required":false,"type":{{"type":"map","key-id":31,"key":"string","value-id":32,"value":"decimal(9,2)","value-required":true}}}},
                {{"id":40,"name":"ts","required":false,"type":"timestamp"}}]}},
              "partition-spec":{{"spec-id":3,"fields":[{{"name":"ts_day","transform":"day","source-id":40,"field-id":1005}},{{"name":"id_bucket","transform":"bucket[8]","source-id":10}}]}},
              "write-order":{{"order-id":5,"fields":[{{"transform":"identity","source-id":40,"direction":"desc","null-order":"nulls-last"}}]}},
              "properties":{{{properties}}}}}"#
        ))
    }

    #[test]
    fn ids_are_fresh_in_java_order_and_references_follow() {
        let md = new_table_metadata(&request(r#""owner":"me""#), "s3://b/t/", "u-1", 42).unwrap();
        let schema = &md.schemas[0];
        // Top-level fields take 1..4, then point's fields, then tags' element, its struct, then the map.
        let out = to_value(schema);
        assert_eq!(out["schema-id"], 0);
        assert_eq!(out["identifier-field-ids"], serde_json::json!([1]));
        let ids: Vec<i64> = out["fields"].as_array().unwrap().iter().map(|f| f["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let point = &out["fields"][1]["type"];
        assert_eq!((point["fields"][0]["id"].as_i64(), point["fields"][1]["id"].as_i64()), (Some(5), Some(6)));
        let tags = &point["fields"][1]["type"];
        assert_eq!(tags["element-id"], 7);
        assert_eq!(tags["element"]["fields"][0]["id"], 8);
        let attrs = &out["fields"][2]["type"];
        assert_eq!((attrs["key-id"].as_i64(), attrs["value-id"].as_i64()), (Some(9), Some(10)));
        assert_eq!(md.last_column_id, 10);

        let spec = &md.partition_specs[0];
        assert_eq!((spec.spec_id, md.default_spec_id, md.last_partition_id), (0, 0, 1001));
        let fields: Vec<(i32, i32)> = spec.fields.iter().map(|f| (f.source_id, f.field_id)).collect();
        assert_eq!(fields, [(4, 1000), (1, 1001)]);
        assert_eq!(
            (md.sort_orders[0].order_id, md.default_sort_order_id, md.sort_orders[0].fields[0].source_id),
            (1, 1, 4)
        );

        assert_eq!((md.format_version, md.location.as_str(), md.table_uuid.as_str()), (2, "s3://b/t", "u-1"));
        assert_eq!((md.last_updated_ms, md.last_sequence_number, md.current_snapshot_id), (42, 0, None));
        assert!(md.snapshot_log.is_empty() && md.metadata_log.is_empty() && md.refs.is_empty());
        assert_eq!(md.properties, [("owner".to_owned(), "me".to_owned())].into());
    }

    #[test]
    fn format_version_comes_from_properties_and_is_not_stored() {
        for (v, expected) in [("1", 1), ("2", 2), ("3", 3)] {
            let md = new_table_metadata(&request(&format!(r#""format-version":"{v}","uuid":"x""#)), "s3://b/t", "u", 1)
                .unwrap();
            assert_eq!(md.format_version, expected);
            assert!(md.properties.is_empty());
        }
        for v in ["0", "4", "two", ""] {
            let err =
                new_table_metadata(&request(&format!(r#""format-version":"{v}""#)), "s3://b/t", "u", 1).unwrap_err();
            assert!(matches!(err, MetadataError::Invalid(_)), "{v}");
        }
    }

    #[test]
    fn unsorted_and_unpartitioned_defaults() {
        let req: CreateTableRequest = parse(
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":false,"type":"int"}]},"write-order":{"order-id":0,"fields":[]}}"#,
        );
        let md = new_table_metadata(&req, "/tmp/t", "u", 1).unwrap();
        assert_eq!(md.sort_orders, [SortOrder::unsorted()]);
        assert_eq!(md.default_sort_order_id, 0);
        assert!(md.partition_specs[0].fields.is_empty());
        assert_eq!(md.last_partition_id, 999);
    }

    #[test]
    fn bad_requests_are_invalid() {
        let cases = [
            // Partition source that is not a column.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":false,"type":"int"}]},"partition-spec":{"fields":[{"name":"p","transform":"identity","source-id":9}]}}"#,
            // Ambiguous source: two fields share id 1.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":false,"type":"int"},{"id":1,"name":"b","required":false,"type":"int"}]},"partition-spec":{"fields":[{"name":"p","transform":"identity","source-id":1}]}}"#,
            // Sorting by a struct.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"s","required":false,"type":{"type":"struct","fields":[]}}]},"write-order":{"fields":[{"transform":"identity","source-id":1,"direction":"asc","null-order":"nulls-first"}]}}"#,
            // A v3 type in a v2 table.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"v","required":false,"type":"variant"}]}}"#,
            // A default before v3.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"v","required":false,"type":"int","initial-default":1}]}}"#,
            // An optional identifier field.
            r#"{"name":"t","schema":{"type":"struct","identifier-field-ids":[1],"fields":[{"id":1,"name":"v","required":false,"type":"int"}]}}"#,
            // Duplicate partition names.
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":false,"type":"int"}]},"partition-spec":{"fields":[{"name":"p","transform":"identity","source-id":1},{"name":"p","transform":"bucket[2]","source-id":1}]}}"#,
        ];
        for json in cases {
            let err = new_table_metadata(&parse(json), "s3://b/t", "u", 1).unwrap_err();
            assert!(matches!(err, MetadataError::Invalid(_)), "{json}: {err:?}");
        }
        let ok: CreateTableRequest = parse(
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"a","required":false,"type":"int"},{"id":1,"name":"b","required":false,"type":"int"}]}}"#,
        );
        assert_eq!(new_table_metadata(&ok, "s3://b/t", "u", 1).unwrap().last_column_id, 2);
        assert!(new_table_metadata(&ok, "/", "u", 1).is_err());
    }

    #[test]
    fn v3_tables_accept_defaults_and_new_types() {
        let req: CreateTableRequest = parse(
            r#"{"name":"t","schema":{"type":"struct","fields":[{"id":1,"name":"v","required":false,"type":"variant"},{"id":2,"name":"n","required":false,"type":"int","initial-default":3,"write-default":4}]},"properties":{"format-version":"3"}}"#,
        );
        let md = new_table_metadata(&req, "s3://b/t", "u", 1).unwrap();
        let out = to_value(&md);
        assert_eq!(out["next-row-id"], 0);
        assert!(out["current-snapshot-id"].is_null());
        assert_eq!(out["schemas"][0]["fields"][1]["initial-default"], 3);
    }
}
