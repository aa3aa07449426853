//! Command-line arguments of `bingsan bench`, and parsing of the values they
//! carry (durations, target URLs).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::scenario::{Mix, OpKind};

/// Load generator for an Iceberg REST catalog (and the static calibration server).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Catalog base URL (plain http).
    #[arg(long, env = "BINGSAN_BENCH_TARGET", default_value = "http://127.0.0.1:8181")]
    pub target: String,
    /// Catalog prefix path segment (/v1/{prefix}/...); if unset, the `prefix`
    /// override from /v1/config is used when present.
    #[arg(long, env = "BINGSAN_BENCH_PREFIX")]
    pub prefix: Option<String>,
    /// Warehouse passed to /v1/config.
    #[arg(long, env = "BINGSAN_BENCH_WAREHOUSE")]
    pub warehouse: Option<String>,
    /// Bearer token sent in the Authorization header.
    #[arg(long, env = "BINGSAN_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A single scenario (default load-table; soak defaults to
    /// load-table=90,commit=10).
    #[arg(long, value_enum, env = "BINGSAN_BENCH_SCENARIO", conflicts_with = "mix")]
    pub scenario: Option<OpKind>,
    /// Weighted mix of scenarios, e.g. load-table=90,commit=10.
    #[arg(long, env = "BINGSAN_BENCH_MIX", value_parser = Mix::parse)]
    pub mix: Option<Mix>,
    /// Open connections, spread evenly across shards.
    #[arg(short, long, env = "BINGSAN_BENCH_CONNECTIONS", default_value_t = 100)]
    pub connections: usize,
    /// Generator shards (one pinned thread each); default: one per CPU in --cpus
    /// or per available core.
    #[arg(long, env = "BINGSAN_BENCH_SHARDS")]
    pub shards: Option<usize>,
    /// CPUs to pin the shards to, e.g. 2,3 (keeps generator and server apart).
    #[arg(long, env = "BINGSAN_BENCH_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Measured time, after warm-up (e.g. 30s, 10m).
    #[arg(short, long, env = "BINGSAN_BENCH_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring; nothing is recorded during it.
    #[arg(long, env = "BINGSAN_BENCH_WARMUP", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open-loop mode: total requests per second over all connections, sent on
    /// a fixed schedule; latency counts from the scheduled send time.
    #[arg(long, env = "BINGSAN_BENCH_RATE")]
    pub rate: Option<f64>,
    /// Connect, write and per-read timeout.
    #[arg(long, env = "BINGSAN_BENCH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Connection attempts in flight per shard while ramping up.
    #[arg(long, env = "BINGSAN_BENCH_CONNECT_CONCURRENCY", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Namespace for fixtures (default bench_<random>); re-using one is fine.
    #[arg(long, env = "BINGSAN_BENCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Tables the commit scenario appends to (contention rises as this falls).
    #[arg(long, env = "BINGSAN_BENCH_HOT_TABLES", default_value_t = 4)]
    pub hot_tables: usize,
    /// Each commit connection writes only table (its index mod --hot-tables):
    /// with --hot-tables >= connections no two writers share a table, so no
    /// commit conflicts (commits without contention).
    #[arg(long, env = "BINGSAN_BENCH_OWN_TABLES")]
    pub own_tables: bool,
    /// Retries of a commit after 409 before it counts as failed.
    #[arg(long, env = "BINGSAN_BENCH_COMMIT_RETRIES", default_value_t = 10)]
    pub commit_retries: u32,
    /// First wait before a commit retry, doubling per retry with jitter
    /// (Iceberg writers use 100ms); 0 retries at once.
    #[arg(long, env = "BINGSAN_BENCH_COMMIT_BACKOFF", default_value = "0s", value_parser = parse_duration)]
    pub commit_backoff: Duration,
    /// Snapshots kept per hot table: a commit also removes older ones, as
    /// snapshot expiry would, so metadata stays bounded (0 = never remove).
    #[arg(long, env = "BINGSAN_BENCH_KEEP_SNAPSHOTS", default_value_t = 100)]
    pub keep_snapshots: usize,
    /// Snapshots each commit table starts with (built by one commit during
    /// setup); commits then append one and expire the oldest, so the table
    /// stays this size. 0: the usual small hot tables.
    #[arg(long, env = "BINGSAN_BENCH_SNAPSHOTS", default_value_t = 0)]
    pub snapshots: usize,
    /// Extra connections that run closed-loop commits (on the commit tables)
    /// beside the workload, e.g. reads at a fixed --rate: their latency is
    /// reported under `commit`.
    #[arg(long, env = "BINGSAN_BENCH_WRITERS", default_value_t = 0)]
    pub writers: usize,
    /// Directory the fsync scenario writes its files in (a file per writer,
    /// removed afterwards).
    #[arg(long, env = "BINGSAN_BENCH_DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Prometheus endpoint of the target (default <target>/metrics); skipped
    /// if unreachable.
    #[arg(long, env = "BINGSAN_BENCH_METRICS_URL")]
    pub metrics_url: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Soak mode: sample server RSS and pool retention during the run and fail
    /// on errors or RSS growth after warm-up.
    #[arg(long, env = "BINGSAN_BENCH_SOAK")]
    pub soak: bool,
    /// Soak sampling period.
    #[arg(long, env = "BINGSAN_BENCH_SAMPLE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Server process whose VmRSS is reported before, during and after the
    /// run (and sampled by the soak).
    #[arg(long, env = "BINGSAN_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Soak fails if post-warm-up RSS ends this fraction above where it began
    /// (by regression) or peaks this fraction above its first sample.
    #[arg(long, env = "BINGSAN_BENCH_RSS_TOLERANCE", default_value_t = 0.10)]
    pub rss_tolerance: f64,
}

/// The idle scenario's default: each connection sends once per this long.
const IDLE_PERIOD: Duration = Duration::from_secs(10);

impl BenchArgs {
    /// Requests per second in open-loop mode: --rate, or for the idle
    /// scenario one request per connection per max(warm-up, 10 s), so each
    /// connection has sent one by the end of the warm-up.
    pub fn rate(&self) -> Option<f64> {
        match self.rate {
            Some(r) => Some(r),
            None if self.idle() => Some(self.connections as f64 / self.warmup.max(IDLE_PERIOD).as_secs_f64()),
            None => None,
        }
    }

    /// Snapshots a commit leaves in its table: --snapshots when given
    /// (steady size), else --keep-snapshots.
    pub fn keep(&self) -> usize {
        if self.snapshots > 0 {
            self.snapshots
        } else {
            self.keep_snapshots
        }
    }

    /// Whether the run commits: the workload has commits or --writers adds them.
    pub fn commits(&self) -> bool {
        self.writers > 0 || self.workload().contains(OpKind::Commit)
    }

    /// Every connection the run holds: the workload's and the writers'.
    pub fn all_connections(&self) -> usize {
        self.connections + self.writers
    }

    /// Whether this run is the idle scenario (it also waits for the server
    /// to give memory back after the connections close).
    pub fn idle(&self) -> bool {
        self.workload() == Mix::single(OpKind::Idle)
    }

    /// The workload: --mix, else --scenario, else the mode's default.
    pub fn workload(&self) -> Mix {
        match (&self.mix, self.scenario) {
            (Some(mix), _) => mix.clone(),
            (None, Some(kind)) => Mix::single(kind),
            (None, None) if self.soak => Mix::parse("load-table=90,commit=10").expect("valid"),
            (None, None) => Mix::single(OpKind::LoadTable),
        }
    }
}

/// Accepts `250ms`, `30s`, `10m`, `1h`, or bare seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// An `http://host:port/base` URL resolved once.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Sent as the Host header.
    pub host: String,
    /// Path before `/v1`, without a trailing slash (usually empty).
    pub base: String,
}

impl Target {
    pub fn parse(url: &str) -> io::Result<Target> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port.to_socket_addrs()?.next().ok_or_else(|| bad("host did not resolve"))?;
        Ok(Target { addr, host: authority.to_string(), base: path.trim_end_matches('/').to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8181").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8181".parse().unwrap());
        assert_eq!((t.host.as_str(), t.base.as_str()), ("127.0.0.1:8181", ""));
        let t = Target::parse("http://127.0.0.1/catalog/").unwrap();
        assert_eq!((t.addr.port(), t.base.as_str()), (80, "/catalog"));
        assert!(Target::parse("https://127.0.0.1").is_err());
    }
}
