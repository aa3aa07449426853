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
/// Commit table `i`: `hot_{i}`, or `big{snapshots}_{i}` for tables built
/// with `snapshots` snapshots (so runs of different sizes never share one).
pub fn hot_table(i: usize, snapshots: usize) -> String {
    match snapshots {
        0 => format!("hot_{i}"),
        n => format!("big{n}_{i}"),
    }
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

/// Where the bench's snapshots say their manifest lists are (never read).
pub fn manifest_prefix(namespace: &str, table: &str) -> String {
    format!("file:///bingsan-bench/{namespace}/{table}/metadata")
}

/// CommitTableRequest that gives an empty table snapshots 1..=`count` (each
/// with the summary a Spark append writes, ~600 bytes of JSON, as engines
/// leave them) and points `main` at the last: a big table in one request.
pub fn add_snapshots_body(count: usize, manifest_prefix: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(count * 700 + 128);
    s.push_str(r#"{"requirements":[{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":null}],"updates":["#);
    for i in 1..=count {
        let parent = if i > 1 { format!(r#""parent-snapshot-id":{},"#, i - 1) } else { String::new() };
        let _ = write!(
            s,
            r#"{{"action":"add-snapshot","snapshot":{{"snapshot-id":{i},{parent}"sequence-number":{i},"timestamp-ms":{ts},"schema-id":0,"manifest-list":"{manifest_prefix}/snap-{i}-1-{i:032x}.avro","summary":{{"operation":"append","added-data-files":"4","added-records":"40000","added-files-size":"1234567","changed-partition-count":"1","total-records":"{rec}","total-files-size":"{size}","total-data-files":"{files}","total-delete-files":"0","total-position-deletes":"0","total-equality-deletes":"0","engine-name":"spark","engine-version":"3.5.1","app-id":"app-{i:08}"}}}}}},"#,
            ts = 1_700_000_000_000u64 + 1000 * i as u64,
            rec = 40_000 * i,
            size = 1_234_567 * i,
            files = 4 * i,
        );
    }
    let _ = write!(s, r#"{{"action":"set-snapshot-ref","ref-name":"main","type":"branch","snapshot-id":{count}}}]}}"#);
    s
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

/// Creates what `mix` needs, and `commit_tables` (count, snapshots each)
/// when the run commits. `namespace` and `prefix` as given on the command
/// line. A commit table that already exists is used as it is.
pub fn setup(
    client: &BlockingClient,
    base: &str,
    warehouse: Option<&str>,
    prefix: Option<&str>,
    namespace: &str,
    commit_tables: Option<(usize, usize)>,
    mix: &Mix,
) -> io::Result<Fixtures> {
    let mut fixtures = Fixtures { prefix: prefix.map(str::to_string), namespace: namespace.to_string() };
    let commits = commit_tables.is_some();
    if !commits && mix.kinds().all(|k| k == OpKind::Health) {
        return Ok(fixtures);
    }
    let path = config_path(base, warehouse);
    let (status, body) = client.request("GET", &path, None)?;
    expect(&format!("GET {path}"), status, &body, &[200])?;
    if fixtures.prefix.is_none() {
        fixtures.prefix =
            sonic_rs::get_from_slice(&body, &["overrides", "prefix"]).ok().and_then(|v| v.as_str().map(str::to_string));
    }
    if !commits && mix.kinds().all(|k| matches!(k, OpKind::Health | OpKind::Config | OpKind::Idle)) {
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
    let path = format!("{root}/namespaces/{namespace}/tables");
    for (name, body) in &tables {
        let (status, resp) = client.request("POST", &path, Some(body.as_bytes()))?;
        expect(&format!("create table {namespace}.{name}"), status, &resp, &[200, 409])?;
    }
    let (count, snapshots) = commit_tables.unwrap_or((0, 0));
    for i in 0..count {
        let name = hot_table(i, snapshots);
        let (status, resp) = client.request("POST", &path, Some(narrow_table_body(&name).as_bytes()))?;
        expect(&format!("create table {namespace}.{name}"), status, &resp, &[200, 409])?;
        if status == 200 && snapshots > 0 {
            let body = add_snapshots_body(snapshots, &manifest_prefix(namespace, &name));
            let (status, resp) = client.request("POST", &format!("{path}/{name}"), Some(body.as_bytes()))?;
            expect(&format!("add {snapshots} snapshots to {namespace}.{name}"), status, &resp, &[200])?;
        }
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
    fn big_table_commit_adds_a_chain_of_snapshots() {
        let v = parse(&add_snapshots_body(3, "file:///b/ns/t/metadata"));
        assert!(v["requirements"][0]["snapshot-id"].is_null(), "only an empty table takes it");
        let updates = v["updates"].as_array().unwrap();
        assert_eq!(updates.len(), 4);
        for (i, u) in updates.iter().take(3).enumerate() {
            let snap = &u["snapshot"];
            let id = i as i64 + 1;
            assert_eq!(u["action"].as_str(), Some("add-snapshot"));
            assert_eq!((snap["snapshot-id"].as_i64(), snap["sequence-number"].as_i64()), (Some(id), Some(id)));
            assert_eq!(snap["parent-snapshot-id"].as_i64(), (id > 1).then_some(id - 1));
            assert_eq!(snap["summary"]["total-records"].as_str(), Some(&*(40_000 * id).to_string()));
            assert!(snap["manifest-list"].as_str().unwrap().starts_with("file:///b/ns/t/metadata/snap-"));
        }
        assert_eq!(updates[3]["action"].as_str(), Some("set-snapshot-ref"));
        assert_eq!(updates[3]["snapshot-id"].as_i64(), Some(3));
        // As big as the snapshots engines write, so 10,000 make ~6 MB of metadata.
        let per_snapshot = add_snapshots_body(1000, "file:///b/ns/t/metadata").len() / 1000;
        assert!((550..750).contains(&per_snapshot), "{per_snapshot} bytes per snapshot");
    }

    #[test]
    fn commit_table_names_carry_their_size() {
        assert_eq!(hot_table(3, 0), "hot_3");
        assert_eq!(hot_table(0, 10_000), "big10000_0");
    }

    #[test]
    fn paths() {
        assert_eq!(api_root("", None), "/v1");
        assert_eq!(api_root("/x", Some("wh")), "/x/v1/wh");
        assert_eq!(config_path("", Some("s3://b/w h")), "/v1/config?warehouse=s3%3A%2F%2Fb%2Fw%20h");
        assert_eq!(config_path("", None), "/v1/config");
    }
}
