//! The result of a run, as a human-readable table or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::histogram::LatencySummary;
use super::server_cpu::CpuReport;
use super::soak::SoakReport;
use super::stats::{ErrorCounts, ShardStats};

#[derive(Clone, Debug, Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub ops: u64,
    pub throughput_rps: f64,
    pub latency: LatencySummary,
}

/// Derived from the target's /metrics; fields are absent when the server
/// does not export the underlying counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerReport {
    pub scraped: bool,
    pub pool_hit_rate: Option<f64>,
    pub allocs_per_request: Option<f64>,
    pub pool_retained_bytes: Option<f64>,
}

/// The server's resident memory around the run (`--server-pid`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RssReport {
    /// Before the generator connected.
    pub before: u64,
    /// Halfway through the measured window, every connection held.
    pub during: u64,
    /// The last sample after the connections closed...
    pub after: u64,
    /// ...taken this long after they closed.
    pub after_s: f64,
    /// (during - before) / connections held at the start of the window.
    pub per_connection: f64,
}

impl RssReport {
    pub fn new(before: u64, during: u64, after: u64, after_s: f64, held: u64) -> RssReport {
        let per_connection = during.saturating_sub(before) as f64 / held.max(1) as f64;
        RssReport { before, during, after, after_s, per_connection }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub workload: String,
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub shards: usize,
    /// Every connection asked for: the workload's plus the writers'.
    pub connections: usize,
    /// Closed-loop committers beside the workload (--writers).
    pub writers: usize,
    pub connected: u64,
    /// Connections open on both sides at the start and at the end of the
    /// measured window; fewer than `connections` fails the run.
    pub open_at_start: u64,
    pub open_at_end: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Successful operations in the measured window (a commit may be
    /// several requests).
    pub ops: u64,
    pub throughput_rps: f64,
    pub http_requests: u64,
    pub http_rps: f64,
    pub latency: LatencySummary,
    pub by_op: Vec<OpReport>,
    pub status: BTreeMap<String, u64>,
    pub errors: ErrorCounts,
    pub errors_total: u64,
    pub commit_retries: u64,
    /// The commit requests alone, without the loads before them (absent
    /// when no commit ran).
    pub commit_post: Option<LatencySummary>,
    /// Commits that still conflicted after every retry.
    pub commit_gave_up: u64,
    pub server: ServerReport,
    pub rss: Option<RssReport>,
    /// The server's CPU over the measured window (`--server-pid`).
    pub server_cpu: Option<CpuReport>,
    pub soak: Option<SoakReport>,
}

/// Fields of a run that are not counted by the shards.
pub struct RunInfo {
    pub target: String,
    pub workload: String,
    pub rate: Option<f64>,
    pub shards: usize,
    pub connections: usize,
    pub writers: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
}

impl Report {
    pub fn new(info: RunInfo, stats: &ShardStats, server: ServerReport) -> Report {
        let per_s = |n: u64| n as f64 / info.duration_s.max(1e-9);
        let latency = stats.all.summary();
        let by_op = stats
            .by_kind
            .iter()
            .map(|(kind, h)| OpReport {
                op: kind.name(),
                ops: h.count(),
                throughput_rps: per_s(h.count()),
                latency: h.summary(),
            })
            .collect();
        Report {
            mode: if info.rate.is_some() { "open-loop" } else { "closed-loop" },
            target: info.target,
            workload: info.workload,
            rate: info.rate,
            shards: info.shards,
            connections: info.connections,
            writers: info.writers,
            connected: stats.connected,
            open_at_start: stats.open_at_start,
            open_at_end: stats.open_at_end,
            warmup_s: info.warmup_s,
            duration_s: info.duration_s,
            ops: latency.count,
            throughput_rps: per_s(latency.count),
            http_requests: stats.http_requests,
            http_rps: per_s(stats.http_requests),
            latency,
            by_op,
            status: stats.statuses.iter().map(|&(s, n)| (s.to_string(), n)).collect(),
            errors: stats.errors,
            errors_total: stats.errors.total(),
            commit_retries: stats.commit_retries,
            commit_post: (stats.commit_posts.count() > 0).then(|| stats.commit_posts.summary()),
            commit_gave_up: stats.commit_gave_up,
            server,
            rss: None,
            server_cpu: None,
            soak: None,
        }
    }

    pub fn to_json(&self) -> String {
        sonic_rs::to_string(self).expect("report serializes")
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let rate = self.rate.map_or(String::new(), |r| format!(" at {r} req/s"));
        let writers = match self.writers {
            0 => String::new(),
            n => format!(" + {n} closed-loop commit writers"),
        };
        let _ = writeln!(s, "bingsan bench  {}  workload {}{writers}", self.target, self.workload);
        let _ = writeln!(
            s,
            "  {}{rate}, {} shards, {}/{} connections, {}s warm-up + {}s measured",
            self.mode, self.shards, self.connected, self.connections, self.warmup_s, self.duration_s
        );
        let _ = writeln!(
            s,
            "  held         {} connections open at the start of the measured window, {} at its end",
            self.open_at_start, self.open_at_end
        );
        let _ = writeln!(
            s,
            "  throughput   {:.1} ops/s ({} ops), {:.1} http req/s ({} requests)",
            self.throughput_rps, self.ops, self.http_rps, self.http_requests
        );
        let _ = writeln!(
            s,
            "\n  {:<18}{:>10}{:>12}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "ops", "ops/s", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, ops: u64, rps: f64, l: &LatencySummary| {
            let _ = writeln!(
                s,
                "  {name:<18}{ops:>10}{rps:>12.1}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        };
        row("all", self.ops, self.throughput_rps, &self.latency);
        if self.by_op.len() > 1 {
            for op in &self.by_op {
                row(op.op, op.ops, op.throughput_rps, &op.latency);
            }
        }
        if let Some(l) = &self.commit_post {
            row("  its POST alone", l.count, l.count as f64 / self.duration_s.max(1e-9), l);
        }
        let statuses: Vec<_> = self.status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(s, "\n  status       {}", statuses.join("  "));
        let e = &self.errors;
        let _ = writeln!(
            s,
            "  errors       {} (connect {}, io {}, timeout {}, protocol {}, status {}, body {}) over the whole run",
            self.errors_total, e.connect, e.io, e.timeout, e.protocol, e.status, e.body
        );
        if let Some(c) = self.by_op.iter().find(|o| o.op == "commit") {
            let _ = writeln!(
                s,
                "  commits      {} done, {} retries after 409, {} gave up after all retries",
                c.ops, self.commit_retries, self.commit_gave_up
            );
        }
        let fmt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("n/a".to_string(), f);
        if self.server.scraped {
            let _ = writeln!(
                s,
                "  server       pool hit rate {}, allocs/request {}, pool retained {}",
                fmt(self.server.pool_hit_rate, &|v| format!("{:.1}%", v * 100.0)),
                fmt(self.server.allocs_per_request, &|v| format!("{v:.2}")),
                fmt(self.server.pool_retained_bytes, &|v| format!("{:.1} KiB", v / 1024.0)),
            );
        } else {
            let _ = writeln!(s, "  server       /metrics not available");
        }
        if let Some(c) = &self.server_cpu {
            let _ = writeln!(
                s,
                "  server cpu   {:.3} s in the measured window, {} ms and {} context switches per operation",
                c.seconds,
                fmt(c.ms_per_op, &|v| format!("{v:.3}")),
                fmt(c.switches_per_op, &|v| format!("{v:.1}"))
            );
        }
        if let Some(m) = &self.rss {
            let mib = |b: u64| b as f64 / 1048576.0;
            let _ = writeln!(
                s,
                "  server rss   {:.1} MiB before, {:.1} MiB with the connections ({:.0} B each), {:.1} MiB {:.0}s after they closed",
                mib(m.before),
                mib(m.during),
                m.per_connection,
                mib(m.after),
                m.after_s
            );
        }
        if let Some(soak) = &self.soak {
            let _ = writeln!(s, "\n  soak samples (t, rss MiB, pool retained KiB):");
            for x in &soak.samples {
                let _ = writeln!(
                    s,
                    "    {:>8.1}s{} {:>10} {:>12}",
                    x.t_s,
                    if x.post_warmup { " " } else { "*" },
                    fmt(x.rss_bytes.map(|b| b as f64), &|v| format!("{:.1}", v / 1048576.0)),
                    fmt(x.pool_retained_bytes, &|v| format!("{:.1}", v / 1024.0)),
                );
            }
            if let Some(t) = soak.rss {
                let _ = writeln!(
                    s,
                    "  rss trend    {:+.3} MiB/min, fitted growth {:+.1}%, max/first {:.3}",
                    t.slope_per_min / 1048576.0,
                    t.fitted_growth * 100.0,
                    t.max_ratio
                );
            }
            if let Some(t) = soak.pool_retained {
                let _ = writeln!(
                    s,
                    "  pool trend   {:+.1} KiB/min, max/first {:.3}",
                    t.slope_per_min / 1024.0,
                    t.max_ratio
                );
            }
            let _ = writeln!(s, "  soak         {}", soak.verdict);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::{Mix, OpKind};
    use std::time::Duration;

    #[test]
    fn report_renders_as_json_and_table() {
        let mut stats = ShardStats::new(Mix::parse("load-table=9,commit=1").unwrap().kinds());
        stats.response(200, true);
        stats.response(409, true);
        stats.op(OpKind::LoadTable, Duration::from_micros(500));
        stats.commit_retries = 1;
        stats.commit_posts.record(Duration::from_millis(3));
        let info = RunInfo {
            target: "http://127.0.0.1:1".into(),
            workload: "load-table=9,commit=1".into(),
            rate: None,
            shards: 1,
            connections: 1,
            writers: 0,
            warmup_s: 0.0,
            duration_s: 2.0,
        };
        let r = Report::new(info, &stats, ServerReport::default());
        let v: sonic_rs::Value = sonic_rs::from_str(&r.to_json()).unwrap();
        use sonic_rs::JsonValueTrait;
        assert_eq!(v["ops"].as_u64(), Some(1));
        assert_eq!(v["throughput_rps"].as_f64(), Some(0.5));
        assert_eq!(v["status"]["409"].as_u64(), Some(1));
        assert_eq!(v["by_op"][1]["op"].as_str(), Some("commit"));
        assert_eq!(v["mode"].as_str(), Some("closed-loop"));
        let table = r.to_table();
        assert!(table.contains("load-table") && table.contains("1 retries"), "{table}");
        let post = &v["commit_post"];
        assert_eq!(post["count"].as_u64(), Some(1));
        assert!((2.9..3.1).contains(&post["p50_ms"].as_f64().unwrap()), "{post:?}");
        assert!(table.contains("its POST alone"), "{table}");
    }
}
