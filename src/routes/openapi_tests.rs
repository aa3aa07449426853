//! The operation table checked against the OpenAPI document it implements
//! (`tests/spec/rest-catalog-open-api.yaml`, vendored verbatim).

use bumpalo::Bump;

use super::{route, Operation, RouteConfig};
use crate::http::Method;

const SPEC: &str = include_str!("../../tests/spec/rest-catalog-open-api.yaml");

/// Operations of the spec this server does not implement (they answer 404).
const NOT_IMPLEMENTED: [&str; 8] = [
    "listFunctions",
    "loadFunction",
    "planTableScan",
    "fetchPlanningResult",
    "cancelPlanning",
    "fetchScanTasks",
    "unregisterTable",
    "signRequest",
];

/// Mutations the spec gives no `Idempotency-Key` parameter that we still
/// honour it on, as the spec's config field promises "for mutation endpoints".
const IDEMPOTENT_BEYOND_SPEC: [&str; 1] = ["createView"];

/// One operation of the document's `paths`.
#[derive(Debug)]
struct SpecOp {
    method: String,
    path: String,
    id: String,
    idempotency_key: bool,
}

/// Reads the operations from the document's `paths` section. The layout is
/// the document's own: paths at indent 2, methods at 4, their fields at 6.
fn spec_ops() -> Vec<SpecOp> {
    let paths = SPEC.split_once("\npaths:\n").expect("a paths section").1;
    let paths = paths.split_once("\ncomponents:\n").expect("a components section").0;
    let mut ops: Vec<SpecOp> = Vec::new();
    let mut path = "";
    let mut in_op = false;
    for line in paths.lines() {
        if let Some(p) = line.strip_prefix("  /") {
            path = p.trim_end_matches(':');
            in_op = false;
        } else if let Some(key) = line.strip_prefix("    ").filter(|k| !k.starts_with(' ')) {
            let key = key.trim_end_matches(':');
            in_op = matches!(key, "get" | "head" | "post" | "put" | "delete" | "patch" | "options");
            if in_op {
                let method = key.to_ascii_uppercase();
                ops.push(SpecOp { method, path: format!("/{path}"), id: String::new(), idempotency_key: false });
            }
        } else if let Some(id) = line.strip_prefix("      operationId: ") {
            assert!(in_op, "operationId outside an operation: {line}");
            ops.last_mut().unwrap().id = id.trim().to_string();
        } else if line.contains("#/components/parameters/idempotency-key") {
            assert!(in_op, "a path-wide Idempotency-Key parameter: extend this reader");
            ops.last_mut().unwrap().idempotency_key = true;
        }
    }
    assert!(ops.iter().all(|o| !o.id.is_empty()), "an operation without operationId");
    ops
}

fn snake(id: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn ours(label: &str) -> Option<Operation> {
    Operation::ALL.into_iter().find(|op| op.spec().label == label)
}

#[test]
fn every_spec_operation_is_ours_or_listed_as_not_implemented() {
    let ops = spec_ops();
    assert_eq!(ops.len(), 35, "the reader lost operations");
    let mut missing: Vec<&str> = Vec::new();
    for o in &ops {
        let Some(op) = ours(&snake(&o.id)) else {
            missing.push(&o.id);
            continue;
        };
        let spec = op.spec();
        assert_eq!((spec.method, spec.path), (o.method.as_str(), o.path.as_str()), "{}", o.id);
        let idempotent = o.idempotency_key || IDEMPOTENT_BEYOND_SPEC.contains(&o.id.as_str());
        assert_eq!(spec.mutation, idempotent, "{}: honours Idempotency-Key", o.id);
    }
    assert_eq!(missing, NOT_IMPLEMENTED);
}

#[test]
fn operations_outside_the_spec() {
    let ids: Vec<String> = spec_ops().iter().map(|o| snake(&o.id)).collect();
    let extra: Vec<Operation> =
        Operation::ALL.into_iter().filter(|op| !ids.contains(&op.spec().label.into())).collect();
    assert_eq!(
        extra,
        [
            Operation::HealthLive,
            Operation::HealthReady,
            Operation::Metrics,
            Operation::HealthWritable,
            Operation::SignS3Request,
            Operation::Unmatched
        ]
    );
    // The config lists the spec's catalog operations, nothing else.
    let advertised = Operation::ALL.into_iter().filter(|op| op.spec().advertised()).count();
    assert_eq!(advertised, spec_ops().len() - NOT_IMPLEMENTED.len() - 2, "all but getConfig and getToken");
}

#[test]
fn every_operation_is_routed_at_its_method_and_path() {
    let arena = Bump::new();
    for prefix in ["", "cat"] {
        let cfg = RouteConfig { prefixes: vec![prefix.into()], separator: String::new() };
        for op in Operation::ALL.into_iter().filter(|op| *op != Operation::Unmatched) {
            let spec = op.spec();
            let at = if prefix.is_empty() { "/v1" } else { "/v1/cat" };
            let path = spec
                .path
                .replace("/v1/{prefix}", at)
                .replace("{namespace}", "ns")
                .replace("{table}", "t")
                .replace("{view}", "v");
            let matched = route(Method::parse(spec.method), &path, &cfg, &arena).map(|m| m.op);
            assert_eq!(matched, Ok(op), "{} {path}", spec.method);
        }
    }
}

#[test]
fn the_table_is_consistent() {
    for (i, op) in Operation::ALL.into_iter().enumerate() {
        assert_eq!(op.index(), i, "ALL is in declaration order");
        let s = op.spec();
        assert_eq!(Operation::ALL.iter().filter(|o| o.spec().label == s.label).count(), 1, "{} is unique", s.label);
        if s.mutation {
            assert!(matches!(s.method, "POST" | "DELETE"), "{}: a mutation is a POST or DELETE", s.label);
            assert!(!s.open, "{}: no mutation without authentication", s.label);
        }
        assert!(!s.warehouse || s.mutation, "{}: warehouse work is a mutation", s.label);
        assert!(!s.commit || s.warehouse, "{}: a commit writes metadata files", s.label);
    }
    assert_eq!(Operation::ALL.last(), Some(&Operation::Unmatched));
}
