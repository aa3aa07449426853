//! Turns the shards' counters into Prometheus metric families.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::shard::{Latency, ShardStats, StoreOp, LATENCY_BUCKETS_US, STATUSES};
use crate::disk::{Cause, DiskState, Target};
use crate::pool::PoolStats;
use crate::routes::Operation;

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], v: u64) -> Metric {
    let mut m = Metric::from_label(labels(pairs));
    let mut c = Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], v: u64) -> Metric {
    let mut m = Metric::from_label(labels(pairs));
    let mut g = Gauge::default();
    g.set_value(v as f64);
    m.set_gauge(g);
    m
}

/// Name, help, reader and whether it is a gauge.
type PoolMetric = (&'static str, &'static str, fn(&PoolStats) -> u64, bool);
type ShardRead = fn(&ShardStats) -> u64;

/// One histogram summed over the shards; `None` when it saw nothing and
/// `always` is false.
fn histogram(
    shards: &[Arc<ShardStats>],
    pick: impl Fn(&ShardStats) -> &Latency,
    labels_: &[(&str, &str)],
    always: bool,
) -> Option<Metric> {
    let count: u64 = shards.iter().map(|s| pick(s).count.load(Relaxed)).sum();
    if count == 0 && !always {
        return None;
    }
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(shards.iter().map(|s| pick(s).sum_us.load(Relaxed)).sum::<u64>() as f64 / 1e6);
    let mut cumulative = 0;
    let buckets = LATENCY_BUCKETS_US
        .iter()
        .enumerate()
        .map(|(b, ub)| {
            cumulative += shards.iter().map(|s| pick(s).buckets[b].load(Relaxed)).sum::<u64>();
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*ub as f64 / 1e6);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = Metric::from_label(labels(labels_));
    m.set_histogram(h);
    Some(m)
}

/// The disk watcher's view: free space per filesystem, and whether writes
/// are accepted now.
pub fn disk_families(disk: &DiskState) -> Vec<MetricFamily> {
    let free =
        Target::ALL.iter().filter_map(|t| disk.free(*t).map(|b| gauge(&[("target", t.name())], b))).collect::<Vec<_>>();
    let writable = gauge(&[], u64::from(disk.unwritable().is_none()));
    let mut out = vec![family(
        "bingsan_storage_writable",
        "1 while writes are accepted; 0 while a disk is refused (full, read-only) or the last write to it failed.",
        MetricType::GAUGE,
        vec![writable],
    )];
    if !free.is_empty() {
        out.push(family(
            "bingsan_storage_free_bytes",
            "Free bytes of the filesystem holding the store (data directory) or the warehouse.",
            MetricType::GAUGE,
            free,
        ));
    }
    out
}

/// Every family derived from the shards' counters.
pub fn shard_families(shards: &[Arc<ShardStats>]) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let pools = |read: fn(&PoolStats) -> u64, gauge_kind: bool| {
        let mut ms = Vec::new();
        for s in shards {
            let shard = s.shard.to_string();
            for (pool, stats) in [("buffer", &*s.buffer_pool), ("arena", &*s.arena_pool), ("token", &*s.token_pool)] {
                let v = read(stats);
                let l = [("pool", pool), ("shard", shard.as_str())];
                ms.push(if gauge_kind { gauge(&l, v) } else { counter(&l, v) });
            }
        }
        ms
    };
    let pool_metrics: [PoolMetric; 6] = [
        ("bingsan_pool_hits_total", "Pool gets served from the free list.", |p| p.hits.load(Relaxed), false),
        ("bingsan_pool_misses_total", "Pool gets that had to allocate.", |p| p.misses.load(Relaxed), false),
        ("bingsan_pool_returns_total", "Items given back and kept.", |p| p.returns.load(Relaxed), false),
        (
            "bingsan_pool_discards_total",
            "Items given back but dropped (oversized or pool full).",
            |p| p.discards.load(Relaxed),
            false,
        ),
        ("bingsan_pool_retained_bytes", "Bytes held by idle pooled items.", |p| p.retained_bytes.load(Relaxed), true),
        ("bingsan_pool_retained_count", "Idle pooled items.", |p| p.retained_count.load(Relaxed), true),
    ];
    for (name, help, read, is_gauge) in pool_metrics {
        let kind = if is_gauge { MetricType::GAUGE } else { MetricType::COUNTER };
        out.push(family(name, help, kind, pools(read, is_gauge)));
    }

    let per_shard = |read: ShardRead, is_gauge: bool| -> Vec<Metric> {
        shards
            .iter()
            .map(|s| {
                let shard = s.shard.to_string();
                let l = [("shard", shard.as_str())];
                if is_gauge {
                    gauge(&l, read(s))
                } else {
                    counter(&l, read(s))
                }
            })
            .collect()
    };
    out.push(family(
        "bingsan_allocs_total",
        "Heap allocations made on the shard's thread.",
        MetricType::COUNTER,
        per_shard(|s| s.allocs.allocs.load(Relaxed), false),
    ));
    out.push(family(
        "bingsan_request_allocs_total",
        "Heap allocations made on the shard's thread while parsing, handling and answering requests.",
        MetricType::COUNTER,
        per_shard(|s| s.allocs.in_requests.load(Relaxed), false),
    ));
    out.push(family(
        "bingsan_alloc_bytes_total",
        "Bytes allocated on the shard's thread.",
        MetricType::COUNTER,
        per_shard(|s| s.allocs.bytes.load(Relaxed), false),
    ));
    out.push(family(
        "bingsan_http_connections",
        "Open client connections.",
        MetricType::GAUGE,
        per_shard(|s| s.connections.load(Relaxed), true),
    ));
    out.push(family(
        "bingsan_http_connections_refused_total",
        "Connections refused at the per-shard limit.",
        MetricType::COUNTER,
        per_shard(|s| s.connections_refused.load(Relaxed), false),
    ));

    let mut requests = Vec::new();
    let mut durations = Vec::new();
    for op in Operation::ALL {
        let i = op.index();
        for (si, status) in STATUSES.iter().enumerate() {
            let n: u64 = shards.iter().map(|s| s.requests[i][si].load(Relaxed)).sum();
            if n > 0 {
                let status = if *status == 0 { "other".to_string() } else { status.to_string() };
                let spec = op.spec();
                requests.push(counter(&[("route", spec.label), ("method", spec.method), ("status", &status)], n));
            }
        }
        if let Some(m) = histogram(shards, |s| &s.latency[i], &[("route", op.spec().label)], false) {
            durations.push(m);
        }
    }
    out.push(family("bingsan_http_requests_total", "Requests answered.", MetricType::COUNTER, requests));
    out.push(family(
        "bingsan_http_request_duration_seconds",
        "Time from a complete request to its response, per route.",
        MetricType::HISTOGRAM,
        durations,
    ));

    let store =
        StoreOp::ALL.iter().filter_map(|op| histogram(shards, |s| &s.store[*op as usize], &[("op", op.name())], true));
    out.push(family(
        "bingsan_store_operation_duration_seconds",
        "Store operations as the shards see them; apply includes waiting for durability.",
        MetricType::HISTOGRAM,
        store.collect(),
    ));

    let commits: [(&str, ShardRead); 3] = [
        ("success", |s| s.commits_ok.load(Relaxed)),
        ("conflict", |s| s.commits_conflict.load(Relaxed)),
        ("failure", |s| s.commits_failed.load(Relaxed)),
    ];
    let commits = commits
        .iter()
        .map(|(result, read)| counter(&[("result", result)], shards.iter().map(|s| read(s)).sum()))
        .collect();
    out.push(family("bingsan_commits_total", "Table and view commits by outcome.", MetricType::COUNTER, commits));
    let files = &super::METADATA_FILES;
    for (name, help, n) in [
        ("bingsan_metadata_verified_total", "Current metadata files checked against their records.", &files.verified),
        (
            "bingsan_metadata_damaged_total",
            "Current metadata files found missing or differing from their records.",
            &files.damaged,
        ),
        ("bingsan_metadata_repaired_total", "Damaged metadata files rewritten from their records.", &files.repaired),
    ] {
        out.push(family(name, help, MetricType::COUNTER, vec![counter(&[], n.load(Relaxed))]));
    }

    let d = &super::DELEGATION;
    let sts = [
        ("ok", &d.sts_ok),
        ("refused", &d.sts_refused),
        ("unreachable", &d.sts_unreachable),
        ("malformed", &d.sts_malformed),
    ]
    .iter()
    .map(|(result, n)| counter(&[("result", result)], n.load(Relaxed)))
    .collect();
    out.push(family(
        "bingsan_sts_calls_total",
        "STS AssumeRole calls made to vend credentials, by outcome (refused: STS answered an error; unreachable: \
         no answer in time or no connection; malformed: an answer without credentials).",
        MetricType::COUNTER,
        sts,
    ));
    out.push(family(
        "bingsan_server_credentials_failures_total",
        "Times the AWS chain gave no server credentials to sign a delegation with.",
        MetricType::COUNTER,
        vec![counter(&[], d.server_credentials_failed.load(Relaxed))],
    ));

    let mut failures = Vec::new();
    for target in Target::ALL {
        for cause in Cause::ALL {
            let n = shards.iter().map(|s| s.write_failures[target as usize][cause as usize].load(Relaxed)).sum();
            failures.push(counter(&[("target", target.name()), ("cause", cause.name())], n));
        }
    }
    out.push(family(
        "bingsan_write_failures_total",
        "Writes to the store or the warehouse that failed or were refused (disk full, read-only, I/O error, timeout).",
        MetricType::COUNTER,
        failures,
    ));
    // The text encoder refuses a family without samples (a fresh server has
    // answered nothing yet); leave those out instead of failing the scrape.
    out.retain(|f| !f.get_metric().is_empty());
    out
}
