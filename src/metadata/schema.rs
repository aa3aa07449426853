//! Iceberg schemas: nested struct/list/map types and primitive type strings.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sonic_rs::Value;

/// A primitive type as written in JSON: `long`, `decimal(10, 2)`, `fixed[16]`, `variant`, ...
///
/// Kept verbatim so that types this server does not know survive a round trip.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrimitiveType(pub String);

impl PrimitiveType {
    /// The type string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the type only exists from format v3 on.
    pub fn requires_v3(&self) -> bool {
        let t = self.0.trim_start().to_ascii_lowercase();
        ["timestamp_ns", "timestamptz_ns", "variant", "unknown", "geometry", "geography"]
            .iter()
            .any(|p| t.starts_with(p))
    }

    /// Whether the type is a floating point number, which cannot identify a row.
    fn is_floating(&self) -> bool {
        self.0.eq_ignore_ascii_case("float") || self.0.eq_ignore_ascii_case("double")
    }

    fn canonical(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.bytes().filter(|b| !b.is_ascii_whitespace()).map(|b| b.to_ascii_lowercase())
    }
}

/// Writers differ in case and spacing (`decimal(10, 2)` vs `decimal(10,2)`); the type is the same.
impl PartialEq for PrimitiveType {
    fn eq(&self, other: &Self) -> bool {
        self.canonical().eq(other.canonical())
    }
}

/// Any Iceberg type.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Primitive(PrimitiveType),
    Struct(StructType),
    List(Box<ListType>),
    Map(Box<MapType>),
}

/// A struct type: an ordered list of fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StructType {
    pub fields: Vec<StructField>,
}

/// One field of a struct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StructField {
    pub id: i32,
    pub name: String,
    pub required: bool,
    #[serde(rename = "type")]
    pub field_type: Type,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Single-value JSON, opaque here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_default: Option<Value>,
    /// Single-value JSON, opaque here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_default: Option<Value>,
}

/// A list type.
#[derive(Clone, Debug, PartialEq)]
pub struct ListType {
    pub element_id: i32,
    pub element: Type,
    pub element_required: bool,
}

/// A map type.
#[derive(Clone, Debug, PartialEq)]
pub struct MapType {
    pub key_id: i32,
    pub key: Type,
    pub value_id: i32,
    pub value: Type,
    pub value_required: bool,
}

/// A table or view schema: a struct with an id and optional identifier fields.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Schema {
    #[serde(default)]
    pub schema_id: i32,
    #[serde(default, deserialize_with = "super::de::null_as_default")]
    pub identifier_field_ids: Vec<i32>,
    pub fields: Vec<StructField>,
}

impl Schema {
    /// The highest field id used anywhere in the schema, nested ids included; 0 when empty.
    pub fn highest_field_id(&self) -> i32 {
        let mut max = 0;
        walk(&self.fields, &mut |id, _, _| max = max.max(id));
        max
    }

    /// The type of the field, list element, map key or map value with this id.
    pub fn find_type(&self, id: i32) -> Option<&Type> {
        let mut found = None;
        walk(&self.fields, &mut |fid, ty, _| {
            if fid == id && found.is_none() {
                found = Some(ty);
            }
        });
        found
    }

    /// Same columns and identifier fields, whatever the schema ids.
    pub fn same_schema(&self, other: &Schema) -> bool {
        let mut a = self.identifier_field_ids.clone();
        let mut b = other.identifier_field_ids.clone();
        a.sort_unstable();
        b.sort_unstable();
        self.fields == other.fields && a == b
    }

    /// Checks ids are unique, identifier fields are usable, and every type and default
    /// is allowed in `format_version`.
    pub fn validate(&self, format_version: u8) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        let mut problem = None;
        walk(&self.fields, &mut |id, ty, field| {
            if problem.is_some() {
                return;
            }
            if !ids.insert(id) {
                problem = Some(format!("Duplicate field id {id} in schema"));
            } else if format_version < 3 {
                if matches!(ty, Type::Primitive(p) if p.requires_v3()) {
                    problem = Some(format!("Invalid type for field {id}: not supported until v3"));
                } else if field.is_some_and(|f| f.initial_default.is_some()) {
                    problem = Some(format!("Invalid initial default for field {id}: not supported until v3"));
                }
            }
        });
        if let Some(p) = problem {
            return Err(p);
        }
        match self.identifier_field_ids.iter().find(|&&id| !is_identifier(&self.fields, id)) {
            Some(id) => Err(format!(
                "Invalid identifier field {id}: must be a required, non-floating primitive field in required structs"
            )),
            None => Ok(()),
        }
    }
}

/// Whether `id` names a required primitive, non-floating field reached only through required structs.
fn is_identifier(fields: &[StructField], id: i32) -> bool {
    fields.iter().any(|f| match &f.field_type {
        _ if !f.required => false,
        Type::Primitive(p) => f.id == id && !p.is_floating(),
        Type::Struct(s) => is_identifier(&s.fields, id),
        _ => false,
    })
}

/// Visits every id in pre-order: struct fields (with the field), list elements, map keys and values.
pub(crate) fn walk<'a>(fields: &'a [StructField], f: &mut impl FnMut(i32, &'a Type, Option<&'a StructField>)) {
    for field in fields {
        f(field.id, &field.field_type, Some(field));
        walk_type(&field.field_type, f);
    }
}

fn walk_type<'a>(ty: &'a Type, f: &mut impl FnMut(i32, &'a Type, Option<&'a StructField>)) {
    match ty {
        Type::Primitive(_) => {}
        Type::Struct(s) => walk(&s.fields, f),
        Type::List(l) => {
            f(l.element_id, &l.element, None);
            walk_type(&l.element, f);
        }
        Type::Map(m) => {
            f(m.key_id, &m.key, None);
            walk_type(&m.key, f);
            f(m.value_id, &m.value, None);
            walk_type(&m.value, f);
        }
    }
}

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", "struct")?;
        map.serialize_entry("schema-id", &self.schema_id)?;
        if !self.identifier_field_ids.is_empty() {
            map.serialize_entry("identifier-field-ids", &self.identifier_field_ids)?;
        }
        map.serialize_entry("fields", &self.fields)?;
        map.end()
    }
}

impl Serialize for Type {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Type::Primitive(p) => s.serialize_str(&p.0),
            Type::Struct(st) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("type", "struct")?;
                map.serialize_entry("fields", &st.fields)?;
                map.end()
            }
            Type::List(l) => {
                let mut map = s.serialize_map(Some(4))?;
                map.serialize_entry("type", "list")?;
                map.serialize_entry("element-id", &l.element_id)?;
                map.serialize_entry("element", &l.element)?;
                map.serialize_entry("element-required", &l.element_required)?;
                map.end()
            }
            Type::Map(m) => {
                let mut map = s.serialize_map(Some(6))?;
                map.serialize_entry("type", "map")?;
                map.serialize_entry("key-id", &m.key_id)?;
                map.serialize_entry("key", &m.key)?;
                map.serialize_entry("value-id", &m.value_id)?;
                map.serialize_entry("value", &m.value)?;
                map.serialize_entry("value-required", &m.value_required)?;
                map.end()
            }
        }
    }
}

/// Every key a nested type object may carry; which ones must be present depends on `type`.
/// Read straight from the parser's map (no buffering), so opaque defaults inside still parse.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NestedTypeWire {
    #[serde(rename = "type")]
    kind: String,
    fields: Option<Vec<StructField>>,
    element_id: Option<i32>,
    element: Option<Type>,
    element_required: Option<bool>,
    key_id: Option<i32>,
    key: Option<Type>,
    value_id: Option<i32>,
    value: Option<Type>,
    value_required: Option<bool>,
}

fn need<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(name))
}

impl NestedTypeWire {
    fn into_type<E: de::Error>(self) -> Result<Type, E> {
        Ok(match self.kind.as_str() {
            "struct" => Type::Struct(StructType { fields: need(self.fields, "fields")? }),
            "list" => Type::List(Box::new(ListType {
                element_id: need(self.element_id, "element-id")?,
                element: need(self.element, "element")?,
                element_required: need(self.element_required, "element-required")?,
            })),
            "map" => Type::Map(Box::new(MapType {
                key_id: need(self.key_id, "key-id")?,
                key: need(self.key, "key")?,
                value_id: need(self.value_id, "value-id")?,
                value: need(self.value, "value")?,
                value_required: need(self.value_required, "value-required")?,
            })),
            other => return Err(E::unknown_variant(other, &["struct", "list", "map"])),
        })
    }
}

impl<'de> Deserialize<'de> for Type {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Type, D::Error> {
        struct TypeVisitor;
        impl<'de> Visitor<'de> for TypeVisitor {
            type Value = Type;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a primitive type string or a struct, list or map object")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Type, E> {
                Ok(Type::Primitive(PrimitiveType(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Type, E> {
                Ok(Type::Primitive(PrimitiveType(v)))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Type, A::Error> {
                NestedTypeWire::deserialize(MapAccessDeserializer::new(map))?.into_type()
            }
        }
        d.deserialize_any(TypeVisitor)
    }
}
