//! Everything the shards need to know about a run, resolved once on the main
//! thread (paths as ready strings, so requests are written without
//! formatting them again) and shared read-only.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::{BenchArgs, Target};
use super::fixtures::{self, Fixtures};
use super::scenario::{Mix, OpKind};

/// One table the commit scenario writes.
#[derive(Clone, Debug)]
pub struct HotTable {
    pub path: String,
    /// Fake location the snapshots' manifest lists point into.
    pub manifest_prefix: String,
}

#[derive(Clone, Debug)]
pub struct Paths {
    pub health: String,
    pub config: String,
    pub namespaces: String,
    pub namespace: String,
    pub table: String,
    pub wide_table: String,
    pub hot_tables: Vec<HotTable>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub host: String,
    pub token: Option<String>,
    pub mix: Mix,
    /// Connections that follow the mix (and --rate); the global indices
    /// from here on are the closed-loop writers.
    pub connections: usize,
    pub writers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub connect_concurrency: usize,
    /// Writer `id` always commits to hot table `id % len` (`--own-tables`).
    pub own_tables: bool,
    pub commit_retries: u32,
    pub commit_backoff: Duration,
    pub keep_snapshots: usize,
    pub paths: Paths,
    /// Makes create-namespace names unique across runs.
    pub namespace_stem: String,
}

impl Plan {
    pub fn new(args: &BenchArgs, target: &Target, fx: &Fixtures, run_tag: &str) -> Plan {
        let base = target.base.as_str();
        let root = fixtures::api_root(base, fx.prefix.as_deref());
        let ns = &fx.namespace;
        let table = |t: &str| format!("{root}/namespaces/{ns}/tables/{t}");
        Plan {
            addr: target.addr,
            host: target.host.clone(),
            token: args.token.clone(),
            mix: args.workload(),
            connections: args.connections,
            writers: args.writers,
            warmup: args.warmup,
            duration: args.duration,
            rate: args.rate(),
            timeout: args.timeout,
            connect_concurrency: args.connect_concurrency.max(1),
            own_tables: args.own_tables,
            commit_retries: args.commit_retries,
            commit_backoff: args.commit_backoff,
            keep_snapshots: args.keep(),
            paths: Paths {
                health: format!("{base}/health/live"),
                config: fixtures::config_path(base, args.warehouse.as_deref()),
                namespaces: format!("{root}/namespaces"),
                namespace: format!("{root}/namespaces/{ns}"),
                table: table(fixtures::NARROW_TABLE),
                wide_table: table(fixtures::WIDE_TABLE),
                hot_tables: (0..args.hot_tables.max(1))
                    .map(|i| {
                        let name = fixtures::hot_table(i, args.snapshots);
                        HotTable { path: table(&name), manifest_prefix: fixtures::manifest_prefix(ns, &name) }
                    })
                    .collect(),
            },
            namespace_stem: format!("{ns}_{run_tag}"),
        }
    }

    /// Whether connection `id` is one of the closed-loop writers.
    pub fn is_writer(&self, id: usize) -> bool {
        id >= self.connections
    }

    /// The kinds the run records: the mix's, and commit when writers run.
    pub fn recorded_kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.mix.kinds().chain((self.writers > 0).then_some(OpKind::Commit))
    }
}
