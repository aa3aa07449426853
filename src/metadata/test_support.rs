//! Fixtures and helpers shared by the unit tests of this module.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::table::TableMetadata;

/// A metadata or view fixture from `testdata/`.
pub(crate) fn fixture(name: &str) -> &'static str {
    match name {
        "v1_legacy" => include_str!("testdata/v1_legacy.json"),
        "v1_current" => include_str!("testdata/v1_current.json"),
        "v2_full" => include_str!("testdata/v2_full.json"),
        "v2_pyiceberg" => include_str!("testdata/v2_pyiceberg.json"),
        "v3_row_lineage" => include_str!("testdata/v3_row_lineage.json"),
        "v3_empty" => include_str!("testdata/v3_empty.json"),
        "view_v1" => include_str!("testdata/view_v1.json"),
        _ => panic!("no fixture {name}"),
    }
}

/// Parses with sonic-rs, as the server does.
pub(crate) fn parse<T: DeserializeOwned>(json: &str) -> T {
    sonic_rs::from_str(json).unwrap_or_else(|e| panic!("cannot parse: {e}\n{json}"))
}

/// A table fixture, parsed.
pub(crate) fn table(name: &str) -> TableMetadata {
    parse(fixture(name))
}

/// Serializes with `sonic_rs::to_writer` into a `Vec<u8>`, then reads it back as a generic value.
pub(crate) fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    let mut buf = Vec::new();
    sonic_rs::to_writer(&mut buf, v).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

/// A JSON text as a generic value.
pub(crate) fn value(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap()
}
