//! Shared by every bench binary (`mod common;`): short criterion settings,
//! allocation counting beside the timings, the result table, and the
//! Iceberg metadata fixtures.
//!
//! Each binary installs the counting allocator itself:
//!
//! ```ignore
//! #[global_allocator]
//! static A: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;
//! ```
//!
//! A [`Bench`] registers the bench thread with `bingsan::alloc`, runs each
//! case under criterion (timing only), then runs it again in a separate
//! counted loop outside criterion's timing and records allocations and bytes
//! per operation. At the end it prints one table (time from criterion's own
//! estimate, allocations, bytes, and each case's ratio to its group's
//! `baseline*` case measured in the same run) and one machine-readable line starting with
//! `bingsan-bench-json `, also written to `target/bench-allocs/<bench>.json`.

// Each binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bingsan::alloc::AllocCounters;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};

/// Iterations of a counted loop in benchmark mode (`cargo bench`).
pub const COUNTED_ITERS: u64 = 1000;
/// Iterations of a counted loop in test mode (`cargo test --benches`).
const COUNTED_ITERS_TEST: u64 = 10;

/// True unless run by `cargo bench` (criterion's own rule: without
/// `--bench`, or with `--test`, every case runs once as a test).
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    !has("--bench") || has("--test")
}

/// Iterations for a counted loop in the current mode.
pub fn counted_iters() -> u64 {
    if test_mode() {
        COUNTED_ITERS_TEST
    } else {
        COUNTED_ITERS
    }
}

/// Points the counting allocator at fresh counters for the calling thread.
pub fn count_this_thread() -> &'static AllocCounters {
    let counters: &'static AllocCounters = Box::leak(Box::new(AllocCounters::default()));
    bingsan::alloc::count_this_thread(counters);
    counters
}

/// Allocations and allocated bytes over some number of operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ops: u64,
    pub allocs: u64,
    pub bytes: u64,
    /// Allocations the server counted on its request path (request_path only).
    pub request_allocs: Option<u64>,
}

impl Counts {
    pub fn allocs_per_op(&self) -> f64 {
        self.allocs as f64 / self.ops.max(1) as f64
    }
    pub fn bytes_per_op(&self) -> f64 {
        self.bytes as f64 / self.ops.max(1) as f64
    }
    pub fn request_allocs_per_op(&self) -> Option<f64> {
        self.request_allocs.map(|r| r as f64 / self.ops.max(1) as f64)
    }
    pub fn add(&mut self, other: Counts) {
        self.ops += other.ops;
        self.allocs += other.allocs;
        self.bytes += other.bytes;
    }
}

/// Runs `op` `iters` times on this (registered) thread after one untimed
/// call that fills pools and caches, and counts what the loop allocated.
pub fn count_loop<R>(counters: &AllocCounters, iters: u64, mut op: impl FnMut() -> R) -> Counts {
    black_box(op());
    let (a0, b0) = (counters.allocs.load(Relaxed), counters.bytes.load(Relaxed));
    for _ in 0..iters {
        black_box(op());
    }
    let (a1, b1) = (counters.allocs.load(Relaxed), counters.bytes.load(Relaxed));
    Counts { ops: iters, allocs: a1 - a0, bytes: b1 - b0, request_allocs: None }
}

/// One measured case.
struct Row {
    group: String,
    case: String,
    counts: Counts,
}

/// A bench binary's criterion instance and its allocation rows.
pub struct Bench {
    name: &'static str,
    c: Criterion,
    rows: Vec<Row>,
    counters: &'static AllocCounters,
    out_dir: PathBuf,
}

/// The target directory: `$CARGO_TARGET_DIR`, else three levels above
/// this executable (`target/<profile>/deps/<bench>-<hash>`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

impl Bench {
    /// Short groups for a shared 2-core machine: 1 s warm-up, 3 s of
    /// measurement, 10 samples. Command-line flags still override these.
    pub fn new(name: &'static str) -> Bench {
        let counters = count_this_thread();
        let out_dir =
            std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| target_dir().join("criterion"));
        let c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(10)
            .output_directory(&out_dir)
            .configure_from_args();
        Bench { name, c, rows: Vec::new(), counters, out_dir }
    }

    /// The counters of the bench thread.
    pub fn counters(&self) -> &'static AllocCounters {
        self.counters
    }

    /// A criterion group; its cases are also counted.
    pub fn group(&mut self, name: &str) -> Group<'_> {
        Group { g: self.c.benchmark_group(name), name: name.to_string(), rows: &mut self.rows, counters: self.counters }
    }

    /// Criterion's estimate of one case in nanoseconds per iteration
    /// (slope when it has one, else mean: the figure criterion prints).
    fn time_ns(&self, group: &str, case: &str) -> Option<f64> {
        let path = self.out_dir.join(group).join(case).join("new").join("estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["slope"]["point_estimate"].as_f64().or_else(|| v["mean"]["point_estimate"].as_f64())
    }

    /// Prints the table and the JSON line; writes the JSON file.
    pub fn finish(self) {
        self.c.final_summary();
        if self.rows.is_empty() {
            return;
        }
        let timed = !test_mode();
        let times: Vec<Option<f64>> =
            self.rows.iter().map(|r| if timed { self.time_ns(&r.group, &r.case) } else { None }).collect();
        let mut table = String::new();
        let _ = writeln!(table, "\n== {}: time from criterion; allocations counted over a separate loop ==", self.name);
        let _ = writeln!(
            table,
            "{:<34} {:>12} {:>11} {:>11} {:>10}  vs baseline (time, allocs, bytes)",
            "case", "time/op", "allocs/op", "bytes/op", "req-allocs"
        );
        let mut json = format!("{{\"bench\":\"{}\",\"counted_iters\":{},\"cases\":[", self.name, counted_iters());
        for (i, r) in self.rows.iter().enumerate() {
            let c = &r.counts;
            let baseline =
                self.rows.iter().position(|b| b.group == r.group && b.case.starts_with("baseline")).filter(|&b| b != i);
            let ratio = baseline.map(|b| {
                let bc = &self.rows[b].counts;
                let t = match (times[i], times[b]) {
                    (Some(o), Some(bt)) if bt > 0.0 => format!("{:.2}x", o / bt),
                    _ => "-".into(),
                };
                let a =
                    if bc.allocs > 0 { format!("{:.2}x", c.allocs_per_op() / bc.allocs_per_op()) } else { "-".into() };
                let by =
                    if bc.bytes > 0 { format!("{:.2}x", c.bytes_per_op() / bc.bytes_per_op()) } else { "-".into() };
                format!("{t}, {a}, {by}")
            });
            let _ = writeln!(
                table,
                "{:<34} {:>12} {:>11} {:>11} {:>10}  {}",
                format!("{}/{}", r.group, r.case),
                times[i].map_or("-".into(), fmt_ns),
                fmt_num(c.allocs_per_op()),
                fmt_num(c.bytes_per_op()),
                c.request_allocs_per_op().map_or("-".into(), fmt_num),
                ratio.unwrap_or_default()
            );
            if i > 0 {
                json.push(',');
            }
            let _ = write!(
                json,
                "{{\"group\":\"{}\",\"case\":\"{}\",\"time_ns\":{},\"ops\":{},\"allocs\":{},\"bytes\":{},\"request_allocs\":{},\"allocs_per_op\":{},\"bytes_per_op\":{}}}",
                r.group,
                r.case,
                times[i].map_or("null".into(), |t| format!("{t:.1}")),
                c.ops,
                c.allocs,
                c.bytes,
                c.request_allocs.map_or("null".into(), |v| v.to_string()),
                c.allocs_per_op(),
                c.bytes_per_op()
            );
        }
        json.push_str("]}");
        println!("{table}");
        println!("bingsan-bench-json {json}");
        // Test runs (`cargo test --benches`) count 10 iterations: keep the
        // file for real runs.
        let dir = target_dir().join("bench-allocs");
        if timed && std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join(format!("{}.json", self.name)), format!("{json}\n"));
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Whole numbers exactly, others to three decimals.
fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A criterion group whose cases are counted too.
pub struct Group<'a> {
    g: BenchmarkGroup<'a, WallTime>,
    name: String,
    rows: &'a mut Vec<Row>,
    counters: &'static AllocCounters,
}

impl Group<'_> {
    /// Times `op` with criterion, then counts its allocations on this thread.
    pub fn case<R>(&mut self, name: &str, mut op: impl FnMut() -> R) -> &mut Self {
        let mut ran = false;
        self.g.bench_function(name, |b| {
            ran = true;
            b.iter(&mut op)
        });
        if ran {
            let counts = count_loop(self.counters, counted_iters(), op);
            self.record(name, counts);
        }
        self
    }

    /// Times with criterion's `iter_custom` (`timed(iters)` returns the time
    /// `iters` operations took) and counts with `count(iters)`; for cases
    /// that run on other threads or whose allocations happen elsewhere.
    pub fn custom(
        &mut self,
        name: &str,
        mut timed: impl FnMut(u64) -> Duration,
        count: impl FnOnce(u64) -> Counts,
    ) -> &mut Self {
        let mut ran = false;
        self.g.bench_function(name, |b| {
            ran = true;
            b.iter_custom(&mut timed)
        });
        if ran {
            let counts = count(counted_iters());
            self.record(name, counts);
        }
        self
    }

    fn record(&mut self, case: &str, counts: Counts) {
        let req =
            counts.request_allocs_per_op().map_or(String::new(), |r| format!(" request-path allocs/op {}", fmt_num(r)));
        println!(
            "allocs {}/{}: {} allocs/op, {} bytes/op over {} ops{}",
            self.name,
            case,
            fmt_num(counts.allocs_per_op()),
            fmt_num(counts.bytes_per_op()),
            counts.ops,
            req
        );
        self.rows.push(Row { group: self.name.clone(), case: case.to_string(), counts });
    }

    pub fn finish(self) {
        self.g.finish();
    }
}

// ------------------------------------------------------------- fixtures

/// Column types cycled through by the fixtures.
const TYPES: [&str; 10] =
    ["long", "string", "timestamptz", "double", "boolean", "date", "decimal(18, 4)", "int", "binary", "uuid"];

/// A struct schema of `columns` top-level columns; every tenth one is a
/// struct of two fields. Returns the JSON and the last column id.
fn schema_json(schema_id: i32, columns: usize) -> (String, i32) {
    let mut next = 0;
    let mut id = || {
        next += 1;
        next
    };
    let mut fields = Vec::with_capacity(columns);
    for i in 0..columns {
        let fid = id();
        let ty = if i % 10 == 9 {
            let (a, b) = (id(), id());
            format!(
                r#"{{"type":"struct","fields":[{{"id":{a},"name":"lat","required":false,"type":"double"}},{{"id":{b},"name":"lon","required":false,"type":"double"}}]}}"#
            )
        } else {
            format!("\"{}\"", TYPES[i % TYPES.len()])
        };
        let doc = if i % 3 == 0 { format!(r#","doc":"column {i} of the fixture""#) } else { String::new() };
        fields.push(format!(r#"{{"id":{fid},"name":"col_{i:03}","required":{},"type":{ty}{doc}}}"#, i == 0));
    }
    let json = format!(
        r#"{{"type":"struct","schema-id":{schema_id},"identifier-field-ids":[],"fields":[{}]}}"#,
        fields.join(",")
    );
    (json, next)
}

/// The id of the first snapshot of [`table_metadata_json`]; the others
/// follow one by one, each the parent of the next, with sequence numbers
/// 1, 2, ...
pub const FIRST_SNAPSHOT_ID: i64 = 4_000_000_000_000_000_000;

/// Valid Iceberg v2 table metadata with `columns` columns and `snapshots`
/// snapshots (Spark-like summaries), a day partition, a sort order, and
/// snapshot and metadata logs; `location` is the table location.
pub fn table_metadata_json(location: &str, columns: usize, snapshots: usize) -> String {
    assert!(snapshots >= 1);
    let (schema, last_column_id) = schema_json(0, columns);
    let base_ms: i64 = 1_719_000_000_000;
    let first_id = FIRST_SNAPSHOT_ID;
    let mut snaps = Vec::with_capacity(snapshots);
    let mut snap_log = Vec::with_capacity(snapshots);
    let mut md_log = Vec::with_capacity(snapshots);
    for s in 0..snapshots {
        let id = first_id + s as i64;
        let ts = base_ms + 60_000 * s as i64;
        let parent = if s == 0 { String::new() } else { format!(r#""parent-snapshot-id":{},"#, id - 1) };
        let n = s as u64 + 1;
        snaps.push(format!(
            concat!(
                r#"{{"sequence-number":{seq},"snapshot-id":{id},{parent}"timestamp-ms":{ts},"#,
                r#""summary":{{"operation":"append","spark.app.id":"local-1719000000000","added-data-files":"4","#,
                r#""added-records":"{added}","added-files-size":"{size}","changed-partition-count":"1","#,
                r#""total-records":"{total}","total-files-size":"{tsize}","total-data-files":"{files}","#,
                r#""total-delete-files":"0","total-position-deletes":"0","total-equality-deletes":"0"}},"#,
                r#""manifest-list":"{loc}/metadata/snap-{id}-1-{uuid}.avro","schema-id":0}}"#
            ),
            seq = n,
            id = id,
            parent = parent,
            ts = ts,
            added = 1000 * n,
            size = 40_960 * n,
            total = 1000 * n * (n + 1) / 2,
            tsize = 40_960 * n * (n + 1) / 2,
            files = 4 * n,
            loc = location,
            uuid = format!("{:08x}-1b2c-4d3e-8f40-{:012x}", s, s * 7919),
        ));
        snap_log.push(format!(r#"{{"timestamp-ms":{ts},"snapshot-id":{id}}}"#));
        md_log.push(format!(
            r#"{{"timestamp-ms":{},"metadata-file":"{location}/metadata/{s:05}-{:08x}-0000-4000-8000-000000000000.metadata.json"}}"#,
            ts - 1,
            s
        ));
    }
    let current = first_id + snapshots as i64 - 1;
    format!(
        concat!(
            r#"{{"format-version":2,"table-uuid":"8f2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d","location":"{loc}","#,
            r#""last-sequence-number":{seq},"last-updated-ms":{updated},"last-column-id":{lcid},"#,
            r#""current-schema-id":0,"schemas":[{schema}],"default-spec-id":0,"#,
            r#""partition-specs":[{{"spec-id":0,"fields":[{{"name":"col_002_day","transform":"day","source-id":3,"field-id":1000}}]}}],"#,
            r#""last-partition-id":1000,"default-sort-order-id":1,"sort-orders":[{{"order-id":0,"fields":[]}},"#,
            r#"{{"order-id":1,"fields":[{{"transform":"identity","source-id":1,"direction":"asc","null-order":"nulls-first"}}]}}],"#,
            r#""properties":{{"owner":"analytics","write.format.default":"parquet","write.parquet.compression-codec":"zstd","#,
            r#""write.metadata.delete-after-commit.enabled":"true","write.metadata.previous-versions-max":"100"}},"#,
            r#""current-snapshot-id":{current},"refs":{{"main":{{"snapshot-id":{current},"type":"branch"}}}},"#,
            r#""snapshots":[{snaps}],"statistics":[],"partition-statistics":[],"#,
            r#""snapshot-log":[{snap_log}],"metadata-log":[{md_log}]}}"#
        ),
        loc = location,
        seq = snapshots,
        updated = base_ms + 60_000 * snapshots as i64,
        lcid = last_column_id,
        schema = schema,
        current = current,
        snaps = snaps.join(","),
        snap_log = snap_log.join(","),
        md_log = md_log.join(","),
    )
}

/// Valid Iceberg view metadata (format v1) with `columns` columns and
/// `versions` versions of a Spark SQL query.
pub fn view_metadata_json(location: &str, columns: usize, versions: usize) -> String {
    assert!(versions >= 1);
    let (schema, _) = schema_json(1, columns);
    let select: Vec<String> = (0..columns.min(12)).map(|i| format!("col_{i:03}")).collect();
    let mut vs = Vec::with_capacity(versions);
    let mut log = Vec::with_capacity(versions);
    for v in 1..=versions {
        let ts = 1_719_000_000_000i64 + 60_000 * v as i64;
        vs.push(format!(
            concat!(
                r#"{{"version-id":{v},"timestamp-ms":{ts},"schema-id":1,"#,
                r#""summary":{{"engine-name":"Spark","engine-version":"3.5.1","app-id":"local-{v}"}},"#,
                r#""default-catalog":"prod","default-namespace":["analytics"],"#,
                r#""representations":[{{"type":"sql","sql":"SELECT {cols} FROM analytics.events WHERE col_002 > DATE '2024-01-{day:02}'","dialect":"spark"}}]}}"#
            ),
            v = v,
            ts = ts,
            cols = select.join(", "),
            day = v % 28 + 1,
        ));
        log.push(format!(r#"{{"version-id":{v},"timestamp-ms":{ts}}}"#));
    }
    format!(
        concat!(
            r#"{{"view-uuid":"fa6506c3-7681-40c8-86dc-e36561f83385","format-version":1,"location":"{loc}","#,
            r#""properties":{{"comment":"Daily event counts","owner":"analytics"}},"schemas":[{schema}],"#,
            r#""current-version-id":{current},"versions":[{vs}],"version-log":[{log}]}}"#
        ),
        loc = location,
        schema = schema,
        current = versions,
        vs = vs.join(","),
        log = log.join(","),
    )
}
