//! The catalog objects a run needs, created over the REST API before the load
//! starts: a namespace and the tables the chosen scenarios read or write.
//! Re-running against the same namespace is fine (409 already-exists is
//! accepted).

use std::io;

use sonic_rs::{json, JsonValueTrait, Value};

use super::blocking::BlockingClient;
use super::scenario::{Mix, OpKind};

/// Names of the fixture tables.
pub const NARROW_TABLE: &str = "events";
pub const WIDE_TABLE: &str = "wide_events";
pub fn hot_table(i: usize) -> String {
    format!("hot_{i}")
}

/// Columns of the wide table (top level; nested types add more field ids).
pub const WIDE_COLUMNS: usize = 128;

/// Body of `POST /v1/{prefix}/namespaces` (CreateNamespaceRequest).
pub fn namespace_body(namespace: &str) -> String {
    json!({"namespace": [namespace], "properties": {"owner": "bingsan-bench"}}).to_string()
}

fn field(id: u32, name: &str, ty: Value, required: bool) -> Value {
    json!({"id": id, "name": name, "type": ty, "required": required})
}

/// CreateTableRequest with the given fields, partitioned by day of field 2
/// (an event timestamp in both schemas), format version 2.
fn table_body(name: &str, fields: Vec<Value>) -> String {
    json!({
        "name": name,
        "schema": {"type": "struct", "schema-id": 0, "identifier-field-ids": [1], "fields": fields},
        "partition-spec": {"spec-id": 0, "fields": [
            {"source-id": 2, "field-id": 1000, "name": "event_ts_day", "transform": "day"}
        ]},
        "write-order": {"order-id": 1, "fields": [
            {"source-id": 2, "transform": "identity", "direction": "asc", "null-order": "nulls-last"}
        ]},
        "properties": {"format-version": "2", "write.format.default": "parquet"}
    })
    .to_string()
}

/// A typical event table: ten primitive columns.
pub fn narrow_table_body(name: &str) -> String {
    let cols = [
        ("id", "long", true),
        ("event_ts", "timestamptz", true),
        ("user_id", "long", false),
        ("event_type", "string", false),
        ("amount", "decimal(18,2)", false),
        ("country", "string", false),
        ("device", "string", false),
        ("session_id", "uuid", false),
        ("is_test", "boolean", false),
        ("event_date", "date", false),
    ];
    let fields = cols.iter().zip(1..).map(|(&(n, t, req), id)| field(id, n, json!(t), req)).collect();
    table_body(name, fields)
}

/// A wide table: `WIDE_COLUMNS` columns of mixed primitive types plus a
/// struct, a list and a map, as analytics fact tables often have.
pub fn wide_table_body(name: &str) -> String {
    const TYPES: [&str; 10] =
        ["string", "long", "double", "int", "boolean", "decimal(38,10)", "date", "timestamp", "float", "binary"];
    let mut fields = vec![field(1, "id", json!("long"), true), field(2, "event_ts", json!("timestamptz"), true)];
    // Nested element ids come after all top-level ids.
    let mut next_nested = WIDE_COLUMNS as u32 + 1;
    let mut nested_id = || {
        next_nested += 1;
        next_nested - 1
    };
    let addr = json!({"type": "struct", "fields": [
        field(nested_id(), "street", json!("string"), false),
        field(nested_id(), "city", json!("string"), false),
        field(nested_id(), "zip", json!("string"), false),
    ]});
    let tags = json!({"type": "list", "element-id": nested_id(), "element": "string", "element-required": false});
    let attrs = json!({"type": "map", "key-id": nested_id(), "key": "string",
        "value-id": nested_id(), "value": "string", "value-required": false});
    fields.push(field(3, "address", addr, false));
    fields.push(field(4, "tags", tags, false));
    fields.push(field(5, "attributes", attrs, false));
    for id in 6..=WIDE_COLUMNS as u32 {
        let ty = TYPES[id as usize % TYPES.len()];
        fields.push(field(id, &format!("c{id:03}"), json!(ty), false));
    }
    table_body(name, fields)
}

/// What setup learned and made.
#[derive(Clone, Debug)]
pub struct Fixtures {
    /// --prefix, or the catalog's `prefix` override from /v1/config.
    pub prefix: Option<String>,
    pub namespace: String,
}

/// Path of the catalog API root: `{base}/v1` or `{base}/v1/{prefix}`.
pub fn api_root(base: &str, prefix: Option<&str>) -> String {
    match prefix {
        Some(p) if !p.is_empty() => format!("{base}/v1/{p}"),
        _ => format!("{base}/v1"),
    }
}

/// `{base}/v1/config`, with `?warehouse=` when given.
pub fn config_path(base: &str, warehouse: Option<&str>) -> String {
    match warehouse {
        Some(w) => format!("{base}/v1/config?warehouse={}", percent_encode(w)),
        None => format!("{base}/v1/config"),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn expect(what: &str, status: u16, body: &[u8], ok: &[u16]) -> io::Result<()> {
    if ok.contains(&status) {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&body[..body.len().min(300)]);
    Err(io::Error::other(format!("{what}: HTTP {status}: {body}")))
}

/// Creates what `mix` needs. `namespace` and `prefix` as given on the
/// command line.
pub fn setup(
    client: &BlockingClient,
    base: &str,
    warehouse: Option<&str>,
    prefix: Option<&str>,
    namespace: &str,
    hot_tables: usize,
    mix: &Mix,
) -> io::Result<Fixtures> {
    let mut fixtures = Fixtures { prefix: prefix.map(str::to_string), namespace: namespace.to_string() };
    if mix.kinds().all(|k| k == OpKind::Health) {
        return Ok(fixtures);
    }
    let path = config_path(base, warehouse);
    let (status, body) = client.request("GET", &path, None)?;
    expect(&format!("GET {path}"), status, &body, &[200])?;
    if fixtures.prefix.is_none() {
        fixtures.prefix =
            sonic_rs::get_from_slice(&body, &["overrides", "prefix"]).ok().and_then(|v| v.as_str().map(str::to_string));
    }
    if mix.kinds().all(|k| matches!(k, OpKind::Health | OpKind::Config | OpKind::Idle)) {
        return Ok(fixtures);
    }
    let root = api_root(base, fixtures.prefix.as_deref());
    let path = format!("{root}/namespaces");
    let (status, body) = client.request("POST", &path, Some(namespace_body(namespace).as_bytes()))?;
    expect(&format!("create namespace {namespace}"), status, &body, &[200, 409])?;

    let mut tables: Vec<(String, String)> = Vec::new();
    if mix.contains(OpKind::LoadTable) {
        tables.push((NARROW_TABLE.into(), narrow_table_body(NARROW_TABLE)));
    }
    if mix.contains(OpKind::LoadTableWide) {
        tables.push((WIDE_TABLE.into(), wide_table_body(WIDE_TABLE)));
    }
    if mix.contains(OpKind::Commit) {
        for i in 0..hot_tables {
            let name = hot_table(i);
            let body = narrow_table_body(&name);
            tables.push((name, body));
        }
    }
    let path = format!("{root}/namespaces/{namespace}/tables");
    for (name, body) in &tables {
        let (status, resp) = client.request("POST", &path, Some(body.as_bytes()))?;
        expect(&format!("create table {namespace}.{name}"), status, &resp, &[200, 409])?;
    }
    Ok(fixtures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::JsonContainerTrait;

    fn parse(s: &str) -> Value {
        sonic_rs::from_str(s).expect("valid JSON")
    }

    #[test]
    fn namespace_body_is_a_create_namespace_request() {
        let v = parse(&namespace_body("bench_x"));
        assert_eq!(v["namespace"][0].as_str(), Some("bench_x"));
        assert!(v["properties"].is_object());
    }

    fn field_ids(ty: &Value, out: &mut Vec<i64>) {
        for key in ["id", "element-id", "key-id", "value-id"] {
            if let Some(id) = ty.get(key).and_then(|v| v.as_i64()) {
                out.push(id);
            }
        }
        for key in ["type", "element", "value"] {
            if let Some(inner) = ty.get(key).filter(|v| v.is_object()) {
                field_ids(inner, out);
            }
        }
        if let Some(fields) = ty.get("fields").and_then(|f| f.as_array()) {
            for f in fields.iter() {
                field_ids(f, out);
            }
        }
    }

    fn check_table(body: &str, name: &str, columns: usize) {
        let v = parse(body);
        assert_eq!(v["name"].as_str(), Some(name));
        let schema = &v["schema"];
        assert_eq!(schema["type"].as_str(), Some("struct"));
        let fields = schema["fields"].as_array().unwrap();
        assert_eq!(fields.len(), columns);
        for f in fields.iter() {
            assert!(f["name"].is_str() && f["required"].is_boolean() && f["id"].is_number());
        }
        let mut ids = Vec::new();
        field_ids(schema, &mut ids);
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "field ids must be unique");
        let spec = &v["partition-spec"]["fields"][0];
        assert_eq!(spec["source-id"].as_i64(), Some(2));
        assert_eq!(fields[1]["name"].as_str(), Some("event_ts"));
        assert_eq!(v["properties"]["format-version"].as_str(), Some("2"));
    }

    #[test]
    fn table_bodies_are_create_table_requests() {
        check_table(&narrow_table_body("events"), "events", 10);
        check_table(&wide_table_body("wide"), "wide", WIDE_COLUMNS);
        const { assert!(WIDE_COLUMNS >= 120) };
    }

    #[test]
    fn paths() {
        assert_eq!(api_root("", None), "/v1");
        assert_eq!(api_root("/x", Some("wh")), "/x/v1/wh");
        assert_eq!(config_path("", Some("s3://b/w h")), "/v1/config?warehouse=s3%3A%2F%2Fb%2Fw%20h");
        assert_eq!(config_path("", None), "/v1/config");
    }
}
