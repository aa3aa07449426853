//! `bingsan bench`: a thread-per-core load generator for Iceberg REST catalogs.
//!
//! The main thread creates fixtures over the REST API, starts one pinned
//! glommio shard per CPU, each ramping up its share of the keep-alive
//! connections, then sets a common start time. Shards drive their
//! connections (closed-loop, or open-loop on a clock schedule) through
//! warm-up and measurement and return their counters and HDR histograms,
//! which are merged. Meanwhile the main thread scrapes the target's
//! `/metrics` at the end of warm-up and after the run, and in soak mode
//! samples the server's RSS.
//!
//! `static_server` is the calibration target: the machine's HTTP ceiling.
//!
//! Typical runs on a small box (server pinned to cpu 0, generator to cpu 1):
//!
//! ```text
//! bench --target http://127.0.0.1:8181 --cpus 1 --scenario load-table -c 100 -d 30s
//! bench --cpus 1 --mix load-table=90,commit=10 --rate 5000 -c 200 -d 60s --json
//! bench --cpus 1 --soak -d 10m --sample-interval 10s --server-pid "$(pidof bingsan)"
//! bench --cpus 1 --scenario idle -c 10000 --warmup 10s --server-pid "$(pidof bingsan)"
//! ```
//!
//! Every connection stays open from the start of the warm-up to the end of
//! the run, whatever its schedule; the report counts those open (on both
//! sides) at the start and the end of the measured window, and `run` fails
//! when that is fewer than asked. With `--server-pid` it reports the
//! server's RSS before, during and after, and per connection.

mod args;
mod blocking;
mod client;
mod commit;
mod fixtures;
mod fsync;
mod held;
mod histogram;
mod http1;
mod metrics_scrape;
mod ops;
mod plan;
mod report;
mod runtime;
mod scenario;
mod schedule;
mod server_cpu;
mod shard;
mod soak;
pub mod static_server;
mod stats;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use args::BenchArgs;
pub use report::Report;
pub use scenario::{Mix, OpKind};
pub use static_server::StaticArgs;

use args::Target;
use blocking::BlockingClient;
use metrics_scrape::{Scraper, ServerMetrics};
use plan::Plan;
use report::{RssReport, RunInfo, ServerReport};
use schedule::Phases;
use server_cpu::CpuReport;
use shard::Shared;
use soak::Sample;
use stats::ShardStats;

/// How often the main thread checks on the shards during the run.
const POLL: Duration = Duration::from_millis(10);
/// Lead time between announcing the start and the start itself, so every
/// shard sees it before it passes.
const START_LEAD: Duration = Duration::from_millis(20);

/// Runs the benchmark and prints the report (a table, or JSON with
/// `--json`). Fails if the run could not happen or a soak did not pass.
pub fn run(args: BenchArgs) -> io::Result<()> {
    if args.workload() == Mix::single(OpKind::Fsync) {
        let dir = args.dir.as_deref().ok_or_else(|| invalid("fsync needs --dir"))?;
        let report = fsync::measure(dir, args.duration)?;
        if args.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_table());
        }
        return Ok(());
    }
    let report = execute(&args)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if let Some(why) = held::shortfall(args.all_connections(), report.open_at_start, report.open_at_end) {
        eprintln!("bench: FAILED: {why}");
        return Err(io::Error::other(why));
    }
    match &report.soak {
        Some(soak) if !soak.passed => Err(io::Error::other(format!("soak {}", soak.verdict))),
        _ => Ok(()),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// Runs the benchmark and returns the report without printing it.
pub fn execute(args: &BenchArgs) -> io::Result<Report> {
    let mix = args.workload();
    if args.connections == 0 {
        return Err(invalid("--connections must be at least 1"));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(invalid("--rate must be a positive number of requests per second"));
    }
    if args.duration.is_zero() {
        return Err(invalid("--duration must be positive"));
    }
    if mix.contains(OpKind::Fsync) {
        return Err(invalid("fsync runs alone: --scenario fsync --dir D"));
    }
    if args.commits() && args.hot_tables == 0 {
        return Err(invalid("--hot-tables must be at least 1 for commit"));
    }
    if args.soak && args.sample_interval.is_zero() {
        return Err(invalid("--sample-interval must be positive"));
    }
    let target = Target::parse(&args.target)?;
    let mut cpus = runtime::shard_cpus(args.shards, args.cpus.as_deref())?;
    let connections = args.all_connections();
    cpus.truncate(args.connections);
    let placement = shard::placement(&cpus, args.connections, args.writers);
    // Sockets plus headroom for io_uring rings, eventfds and scrapes.
    runtime::raise_nofile(connections as u64 + 32 * placement.len() as u64 + 256)?;

    let (seed, tag_bits) = uuid::Uuid::new_v4().as_u64_pair();
    let run_tag = format!("{:08x}", tag_bits as u32);
    let namespace = args.namespace.clone().unwrap_or_else(|| format!("bench_{run_tag}"));
    let client = BlockingClient {
        addr: target.addr,
        host: target.host.clone(),
        token: args.token.clone(),
        timeout: args.timeout,
    };
    eprintln!("bench: preparing fixtures for {mix} (namespace {namespace})");
    let fx = fixtures::setup(
        &client,
        &target.base,
        args.warehouse.as_deref(),
        args.prefix.as_deref(),
        &namespace,
        args.commits().then_some((args.hot_tables, args.snapshots)),
        &mix,
    )?;
    let plan = Arc::new(Plan::new(args, &target, &fx, &run_tag));
    let metrics_url =
        args.metrics_url.clone().unwrap_or_else(|| format!("{}/metrics", args.target.trim_end_matches('/')));
    let scraper = Scraper::new(&metrics_url, args.token.clone())?;

    let rss_before = args.server_pid.and_then(soak::read_rss);
    let shared = Arc::new(Shared::new(seed));
    let mut handles = Vec::with_capacity(placement.len());
    for (i, (cpu, conns)) in placement.iter().cloned().enumerate() {
        let (plan, shared2) = (plan.clone(), shared.clone());
        let writers = args.writers > 0 && i + 1 == placement.len();
        match runtime::spawn_shard(format!("bench-{i}"), cpu, shared.failed.clone(), move || {
            if writers {
                if let Err(e) = runtime::yield_cpu_to_readers() {
                    eprintln!("bench: the writers' shard keeps the readers' priority: {e}");
                }
            }
            shard::run_shard(plan, shared2, conns)
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.failed.store(true, Ordering::SeqCst);
                join_all(handles)?;
                return Err(e);
            }
        }
    }

    let on: Vec<_> = placement.iter().map(|(cpu, _)| cpu).collect();
    eprintln!("bench: opening {connections} connections on {} shards (cpus {on:?})", placement.len());
    while shared.ready.load(Ordering::Acquire) < handles.len() {
        if shared.failed.load(Ordering::Acquire) {
            join_all(handles)?;
            return Err(io::Error::other("a shard failed to start"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now() + START_LEAD;
    shared.start_ns.store((start - shared.base).as_nanos() as u64, Ordering::Release);
    let phases = Phases::new(start, args.warmup, args.duration);
    eprintln!("bench: running {}s warm-up + {}s", args.warmup.as_secs_f64(), args.duration.as_secs_f64());

    let observed = observe(&handles, &phases, args, &scraper);
    let stats = join_all(handles)?;
    let cpu_after = args.server_pid.and_then(server_cpu::usage);
    let rss = rss_before.zip(observed.rss_during).map(|(before, during)| {
        let (after, after_s) = rss_after_close(args, before);
        RssReport::new(before, during, after, after_s, stats.open_at_start)
    });
    let after = scraper.scrape();
    let mut samples = observed.samples;
    if args.soak {
        samples.push(sample(&phases, args, &scraper));
    }

    let server = match (observed.before, after) {
        (Some(before), Some(after)) => ServerReport {
            scraped: true,
            pool_hit_rate: ServerMetrics::hit_rate(&before, &after),
            allocs_per_request: ServerMetrics::allocs_per_request(&before, &after, stats.http_requests),
            pool_retained_bytes: after.pool_retained_bytes,
        },
        _ => {
            eprintln!("bench: {metrics_url} not available; skipping server metrics");
            ServerReport::default()
        }
    };
    let info = RunInfo {
        target: args.target.clone(),
        workload: mix.to_string(),
        rate: args.rate(),
        shards: placement.len(),
        connections,
        writers: args.writers,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
    };
    let mut report = Report::new(info, &stats, server);
    report.rss = rss;
    report.server_cpu =
        observed.cpu_before.zip(cpu_after).map(|(before, after)| CpuReport::new(before, after, report.ops));
    if args.soak {
        report.soak = Some(soak::judge(samples, stats.errors.total(), args.rss_tolerance));
    }
    Ok(report)
}

/// What the main thread saw while the shards ran.
struct Observed {
    before: Option<ServerMetrics>,
    samples: Vec<Sample>,
    /// The server's RSS halfway through the measured window.
    rss_during: Option<u64>,
    /// The server's CPU seconds at the end of warm-up.
    cpu_before: Option<server_cpu::Usage>,
}

/// How long the idle scenario waits for the server to give memory back.
const GIVE_BACK_WITHIN: Duration = Duration::from_secs(60);

/// The server's RSS after the connections closed and when it was taken: at
/// once, or for the idle scenario once it is within 20% of `before` (at
/// most 60 s later).
fn rss_after_close(args: &BenchArgs, before: u64) -> (u64, f64) {
    let closed = Instant::now();
    loop {
        let now = args.server_pid.and_then(soak::read_rss).unwrap_or(0);
        let waited = closed.elapsed();
        if !args.idle() || now as f64 <= before as f64 * 1.2 || waited >= GIVE_BACK_WITHIN {
            return (now, waited.as_secs_f64());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for the shards, scraping /metrics at the end of warm-up and, in
/// soak mode, sampling every `--sample-interval`.
fn observe<T>(handles: &[JoinHandle<T>], phases: &Phases, args: &BenchArgs, scraper: &Scraper) -> Observed {
    let mut before = None;
    let mut scraped = false;
    let mut samples = Vec::new();
    let mut next_sample = phases.start;
    let mut rss_during = None;
    let mut cpu_before = None;
    let midway = phases.warmup_end + (phases.end - phases.warmup_end) / 2;
    loop {
        let now = Instant::now();
        if rss_during.is_none() && now >= midway {
            rss_during = Some(args.server_pid.and_then(soak::read_rss));
        }
        if !scraped && now >= phases.warmup_end {
            cpu_before = args.server_pid.and_then(server_cpu::usage);
            before = scraper.scrape();
            scraped = true;
        }
        if args.soak && now >= next_sample && now < phases.end {
            samples.push(sample(phases, args, scraper));
            next_sample += args.sample_interval;
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(POLL);
    }
    Observed { before, samples, rss_during: rss_during.flatten(), cpu_before }
}

fn sample(phases: &Phases, args: &BenchArgs, scraper: &Scraper) -> Sample {
    let now = Instant::now();
    Sample {
        t_s: now.saturating_duration_since(phases.start).as_secs_f64(),
        post_warmup: now >= phases.warmup_end,
        rss_bytes: args.server_pid.and_then(soak::read_rss),
        pool_retained_bytes: scraper.scrape().and_then(|m| m.pool_retained_bytes),
    }
}

/// Joins every shard (even after a failure) and merges their stats.
fn join_all(handles: Vec<JoinHandle<io::Result<ShardStats>>>) -> io::Result<ShardStats> {
    let mut total = ShardStats::default();
    let mut first_err = None;
    for h in handles {
        match runtime::join(h) {
            Ok(s) => total.merge(&s),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(total), Err)
}

#[cfg(test)]
mod tests;
