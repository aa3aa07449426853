//! Table and view metadata JSON: serialization and deserialization.
//!
//! baseline: what a straightforward server does per response, a fresh `Vec`
//! and `serde_json`. sonic_vec: `sonic_rs::to_vec` (the serializer alone,
//! as the commit path writes metadata files today). ours: a buffer from the
//! shard's `BufPool` and `sonic_rs::to_writer`; parsing with
//! `sonic_rs::from_slice`. Both sides
//! work on the same `bingsan::metadata` values, built by parsing fixture JSON
//! generated here (`common::table_metadata_json`, valid Iceberg v2).
//!
//! `cargo bench --bench metadata`

mod common;

use std::hint::black_box;
use std::sync::Arc;

use bingsan::metadata::{TableMetadata, ViewMetadata};
use bingsan::pool::{BufPool, PoolConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[global_allocator]
static A: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;

/// Serialization and deserialization groups for one document.
fn bench_doc<T: Serialize + DeserializeOwned>(bench: &mut common::Bench, label: &str, json: &str) {
    let value: T = sonic_rs::from_str(json).expect("fixture parses");
    // Both serializers must produce the same document.
    let ours = sonic_rs::to_vec(&value).unwrap();
    let base = serde_json::to_vec(&value).unwrap();
    let same: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    assert_eq!(same, serde_json::from_slice::<serde_json::Value>(&base).unwrap(), "{label}: serializers disagree");
    println!("{label}: {} bytes of JSON", ours.len());

    let cfg = PoolConfig::default();
    let pool = BufPool::new(cfg.buffer_initial, cfg.buffer_max, cfg.buffers_per_shard, Arc::default());

    let mut g = bench.group(&format!("ser_{label}"));
    g.case("baseline", || {
        let out = serde_json::to_vec(black_box(&value)).unwrap();
        out.len()
    });
    // What the commit path does today: the fast serializer, a fresh Vec.
    g.case("sonic_vec", || sonic_rs::to_vec(black_box(&value)).unwrap().len());
    g.case("ours", || {
        let mut out = pool.get();
        sonic_rs::to_writer(&mut *out, black_box(&value)).unwrap();
        out.len()
    });
    g.finish();

    let mut g = bench.group(&format!("de_{label}"));
    g.case("baseline", || serde_json::from_slice::<T>(black_box(&ours)).unwrap());
    g.case("ours", || sonic_rs::from_slice::<T>(black_box(&ours)).unwrap());
    g.finish();

    let s = pool.stats().snapshot();
    println!(
        "{label}: buffer pool hits {} misses {} returns {} discards {} (hit rate {:.4})",
        s.hits,
        s.misses,
        s.returns,
        s.discards,
        s.hits as f64 / (s.hits + s.misses).max(1) as f64
    );
}

fn main() {
    let mut bench = common::Bench::new("metadata");
    let loc = "s3://lake/analytics/events";
    bench_doc::<TableMetadata>(&mut bench, "table_typical", &common::table_metadata_json(loc, 10, 3));
    bench_doc::<TableMetadata>(&mut bench, "table_wide", &common::table_metadata_json(loc, 120, 20));
    bench_doc::<ViewMetadata>(&mut bench, "view_typical", &common::view_metadata_json(loc, 10, 3));
    bench_doc::<ViewMetadata>(&mut bench, "view_wide", &common::view_metadata_json(loc, 120, 20));
    bench.finish();
}
