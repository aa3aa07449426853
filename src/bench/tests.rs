//! End-to-end: the generator against the static server, on loopback.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use sonic_rs::JsonValueTrait;

use super::report::RssReport;
use super::static_server::{self, StaticArgs};
use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Parser)]
struct StaticCli {
    #[command(flatten)]
    args: StaticArgs,
}

fn bench_args(extra: &[&str]) -> BenchArgs {
    let mut argv = vec!["bench"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid args").bench
}

/// Runs `f` against a one-shard static server, then stops it.
fn with_static_server(f: impl FnOnce(String)) {
    let args = StaticCli::try_parse_from(["static", "--listen", "127.0.0.1:0", "--shards", "1"]).unwrap().args;
    let stop = Arc::new(AtomicBool::new(false));
    let server = static_server::start(&args, stop.clone()).expect("static server starts");
    let url = format!("http://{}", server.addr);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(url)));
    stop.store(true, Ordering::SeqCst);
    server.join().expect("static server stops cleanly");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn closed_loop_against_static_server() {
    with_static_server(|url| {
        let args = bench_args(&[
            "--target",
            &url,
            "--scenario",
            "health",
            "--connections",
            "10",
            "--shards",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ]);
        let r = execute(&args).expect("bench runs");
        assert!(r.ops > 0, "{}", r.to_table());
        assert_eq!(r.errors_total, 0, "{}", r.to_table());
        assert_eq!(r.connected, 10);
        assert_eq!(r.status.get("200"), Some(&r.http_requests));
        assert!(r.latency.p50_ms > 0.0 && r.latency.max_ms >= r.latency.p99_ms);
        // The static server has no /metrics in Prometheus form.
        assert!(!r.server.scraped || r.server.allocs_per_request.is_none());
    });
}

#[test]
fn mixed_catalog_reads_and_creates_against_static_server() {
    // Every path answers 200 there, so fixtures and all non-commit
    // scenarios go through the full request path.
    with_static_server(|url| {
        let args = bench_args(&[
            "--target",
            &url,
            "--connections",
            "4",
            "--shards",
            "2",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--warehouse",
            "wh",
            "--mix",
            "health=1,config=1,get-namespace=1,list-namespaces=1,load-table=1,load-table-wide=1,create-namespace=1",
        ]);
        let r = execute(&args).expect("bench runs");
        assert_eq!(r.errors_total, 0, "{}", r.to_table());
        assert_eq!(r.by_op.len(), 7);
        assert!(r.by_op.iter().all(|o| o.ops > 0), "{}", r.to_table());
        let json: sonic_rs::Value = sonic_rs::from_str(&r.to_json()).unwrap();
        assert!(json.is_object());
    });
}

#[test]
fn open_loop_keeps_the_rate() {
    with_static_server(|url| {
        let args = bench_args(&[
            "--target",
            &url,
            "--scenario",
            "health",
            "--connections",
            "4",
            "--shards",
            "1",
            "--rate",
            "400",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ]);
        let r = execute(&args).expect("bench runs");
        assert_eq!(r.errors_total, 0);
        assert_eq!(r.mode, "open-loop");
        // 400 req/s for 1 s, schedule-exact up to the request in flight at the end.
        assert!((390..=410).contains(&r.ops), "{}", r.to_table());
    });
}

#[test]
fn soak_samples_this_process_and_passes() {
    with_static_server(|url| {
        let pid = std::process::id().to_string();
        let args = bench_args(&[
            "--target",
            &url,
            "--scenario",
            "health",
            "--connections",
            "2",
            "--shards",
            "1",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--soak",
            "--sample-interval",
            "200ms",
            "--server-pid",
            &pid,
            "--rss-tolerance",
            "10",
        ]);
        let r = execute(&args).expect("bench runs");
        let soak = r.soak.as_ref().expect("soak report");
        assert!(soak.samples.len() >= 5, "{}", r.to_table());
        assert!(soak.samples.iter().all(|s| s.rss_bytes.is_some()));
        assert!(soak.passed, "{}", r.to_table());
    });
}

#[test]
fn unreachable_target_fails_clearly() {
    // Port 1 on loopback: nothing listens there.
    let args = bench_args(&["--target", "http://127.0.0.1:1", "--scenario", "config"]);
    let err = execute(&args).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn argument_defaults_and_workloads() {
    let a = bench_args(&[]);
    assert_eq!(a.workload(), Mix::single(OpKind::LoadTable));
    assert_eq!((a.connections, a.duration.as_secs(), a.warmup.as_secs()), (100, 10, 2));
    assert_eq!(bench_args(&["--soak"]).workload().to_string(), "load-table=90,commit=10");
    let a = bench_args(&["--mix", "load-table=90,commit=10", "--cpus", "0,1"]);
    assert_eq!(a.workload().to_string(), "load-table=90,commit=10");
    assert_eq!(a.cpus, Some(vec![0, 1]));
    assert!(Cli::try_parse_from(["b", "--mix", "health", "--scenario", "config"]).is_err());
    assert!(Cli::try_parse_from(["b", "--mix", "bogus=1"]).is_err());
}

/// A tiny in-memory catalog for the commit path: enforces
/// `assert-ref-snapshot-id`, checks the snapshot fields, expires snapshots,
/// and on every 4th commit simulates another writer winning the race.
mod fake_catalog {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

    #[derive(Default, Debug)]
    pub struct Table {
        pub current: Option<i64>,
        pub seq: i64,
        pub snapshots: Vec<i64>,
        pub external: i64,
    }

    pub type Tables = Arc<Mutex<HashMap<String, Table>>>;

    /// Snapshots kept per table, by the bench (`--keep-snapshots`) and the rival.
    pub const KEEP: usize = 5;

    /// Serves until the process ends; threads are detached.
    pub fn start() -> (SocketAddr, Tables) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tables = Tables::default();
        let t = tables.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let t = t.clone();
                std::thread::spawn(move || serve(s, t));
            }
        });
        (addr, tables)
    }

    fn serve(mut s: TcpStream, tables: Tables) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut posts = 0u64;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse().unwrap());
            if buf.len() < head + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            let (method, path) = (req.method.unwrap().to_string(), req.path.unwrap().to_string());
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            let (status, json) = handle(&method, &path, &body, &tables, &mut posts);
            // Table loads go out chunked, everything else with a length.
            let out = if method == "GET" && path.contains("/tables/") {
                let (a, b) = json.split_at(json.len() / 2);
                format!(
                    "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            } else {
                format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{json}", json.len())
            };
            if s.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn metadata(t: &Table) -> String {
        let snaps: Vec<String> = t
            .snapshots
            .iter()
            .map(|id| {
                format!(
                    r#"{{"snapshot-id":{id},"timestamp-ms":0,"manifest-list":"m","summary":{{"operation":"append"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"metadata-location":"mem://m.json","metadata":{{"format-version":2,"table-uuid":"u","location":"mem://t","last-sequence-number":{},"current-snapshot-id":{},"snapshots":[{}],"refs":{{}}}}}}"#,
            t.seq,
            t.current.unwrap_or(-1),
            snaps.join(",")
        )
    }

    fn handle(method: &str, path: &str, body: &[u8], tables: &Tables, posts: &mut u64) -> (u16, String) {
        let ok = || (200, "{}".to_string());
        if path.starts_with("/v1/config") {
            return (200, r#"{"defaults":{},"overrides":{"prefix":"wh"}}"#.into());
        }
        let Some(rest) = path.strip_prefix("/v1/wh/namespaces") else {
            return (404, "{}".into());
        };
        let mut tables = tables.lock().unwrap();
        match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
            ("POST", [""]) => ok(),
            ("POST", ["", ns, "tables"]) => {
                let v: Value = sonic_rs::from_slice(body).unwrap();
                let name = v["name"].as_str().unwrap();
                tables.entry(format!("{ns}.{name}")).or_default();
                ok()
            }
            ("GET", ["", ns, "tables", t]) => match tables.get(&format!("{ns}.{t}")) {
                Some(t) => (200, metadata(t)),
                None => (404, "{}".into()),
            },
            ("POST", ["", ns, "tables", t]) => {
                let Some(t) = tables.get_mut(&format!("{ns}.{t}")) else {
                    return (404, "{}".into());
                };
                *posts += 1;
                if *posts % 4 == 0 {
                    // Another writer commits first.
                    let id = 1_000_000 + t.seq;
                    t.seq += 1;
                    t.snapshots.push(id);
                    t.current = Some(id);
                    t.external += 1;
                    // The rival expires snapshots like the bench does.
                    let excess = t.snapshots.len().saturating_sub(KEEP);
                    t.snapshots.drain(..excess);
                }
                let v: Value = sonic_rs::from_slice(body).unwrap();
                let req = &v["requirements"][0];
                assert_eq!(req["type"].as_str(), Some("assert-ref-snapshot-id"));
                if req["snapshot-id"].as_i64() != t.current {
                    return (409, r#"{"error":{"code":409}}"#.into());
                }
                let snap = &v["updates"][0]["snapshot"];
                if snap["sequence-number"].as_i64() != Some(t.seq + 1)
                    || snap["parent-snapshot-id"].as_i64() != t.current
                    || v["updates"][1]["snapshot-id"].as_i64() != snap["snapshot-id"].as_i64()
                {
                    return (400, "{}".into());
                }
                if let Some(rm) = v["updates"].get(2) {
                    let ids: Vec<i64> =
                        rm["snapshot-ids"].as_array().unwrap().iter().filter_map(|x| x.as_i64()).collect();
                    t.snapshots.retain(|s| !ids.contains(s));
                }
                let id = snap["snapshot-id"].as_i64().unwrap();
                t.seq += 1;
                t.snapshots.push(id);
                t.current = Some(id);
                (200, metadata(t))
            }
            _ => (404, "{}".into()),
        }
    }
}

#[test]
fn commits_reload_and_retry_on_conflict() {
    let (addr, tables) = fake_catalog::start();
    let url = format!("http://{addr}");
    let keep = fake_catalog::KEEP.to_string();
    let args = bench_args(&[
        "--target",
        &url,
        "--scenario",
        "commit",
        "--connections",
        "6",
        "--shards",
        "1",
        "--hot-tables",
        "2",
        "--keep-snapshots",
        &keep,
        "--duration",
        "700ms",
        "--warmup",
        "0s",
        "--namespace",
        "ns",
    ]);
    let r = execute(&args).expect("bench runs");
    assert_eq!(r.errors_total, 0, "{}", r.to_table());
    assert!(r.ops > 0 && r.commit_retries > 0, "{}", r.to_table());
    assert_eq!(r.commit_post.map(|l| l.count), Some(r.ops), "one successful POST per commit");
    let tables = tables.lock().unwrap();
    assert_eq!(tables.len(), 2, "fixtures created the hot tables under the discovered prefix");
    // Every successful commit (and every simulated rival one) advanced a
    // table's sequence number exactly once; expiry kept metadata bounded.
    let seqs: i64 = tables.values().map(|t| t.seq - t.external).sum();
    assert_eq!(seqs as u64, r.ops);
    assert!(tables.values().all(|t| t.snapshots.len() <= fake_catalog::KEEP), "{tables:?}");
}

/// The load generator names no module of the server (only the io_uring
/// settings both share), so neither can pull the other into a cycle.
#[test]
fn depends_on_no_server_module() {
    let needle = concat!("crate", "::");
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bench")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices(needle) {
            let used = text[at + needle.len()..].split(|c: char| !c.is_alphanumeric() && c != '_').next();
            assert!(matches!(used, Some("bench" | "uring")), "{} uses module {used:?}", path.display());
        }
    }
}

#[test]
fn open_loop_holds_connections_whose_schedule_ends_early() {
    // 20 connections at 5 req/s: each is due once per 4 s, so most have no
    // request left in a 1 s run; they must stay open to its end anyway.
    with_static_server(|url| {
        let pid = std::process::id().to_string();
        let args = bench_args(&[
            "--target",
            &url,
            "--scenario",
            "health",
            "--connections",
            "20",
            "--shards",
            "1",
            "--rate",
            "5",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--server-pid",
            &pid,
        ]);
        let r = execute(&args).expect("bench runs");
        assert_eq!((r.open_at_start, r.open_at_end), (20, 20), "{}", r.to_table());
        assert!(r.to_table().contains("20 connections open at the start"), "{}", r.to_table());
        let rss = r.rss.as_ref().expect("--server-pid reports the server's RSS");
        assert!(rss.before > 0 && rss.during > 0 && rss.after > 0, "{rss:?}");
        assert!(held::shortfall(20, r.open_at_start, r.open_at_end).is_none());
    });
}

#[test]
fn open_connections_are_counted_on_both_sides() {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    let tracked = vec![Rc::new(Cell::new(ours.as_raw_fd())), Rc::new(Cell::new(-1))];
    assert_eq!(held::count_open(&tracked), 1, "closed on our side (-1) does not count");
    drop(theirs);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(held::count_open(&tracked), 0, "closed by the server does not count");
}

#[test]
fn fewer_connections_than_asked_is_a_failure() {
    assert!(held::shortfall(100, 100, 100).is_none());
    let why = held::shortfall(10_000, 10_000, 81).expect("a shortfall");
    assert!(why.contains("81") && why.contains("10000"), "{why}");
    assert!(held::shortfall(10, 9, 10).is_some());
}

#[test]
fn rss_per_connection_divides_the_growth_by_what_was_held() {
    let r = RssReport::new(10 << 20, 20 << 20, 11 << 20, 3.0, 10_240);
    assert_eq!(r.per_connection, 1024.0);
    assert_eq!(RssReport::new(10, 5, 5, 0.0, 0).per_connection, 0.0, "no growth, no connections: 0");
}

#[test]
fn idle_scenario_sends_once_per_connection_per_period() {
    let a = bench_args(&["--scenario", "idle", "-c", "10000", "--warmup", "2s"]);
    assert!(a.idle());
    assert_eq!(a.rate(), Some(1000.0), "one request per connection per 10 s");
    let a = bench_args(&["--scenario", "idle", "-c", "100", "--warmup", "20s", "--rate", "7"]);
    assert_eq!(a.rate(), Some(7.0));
    assert_eq!(bench_args(&["--scenario", "config"]).rate(), None);
}

#[test]
fn write_path_arguments() {
    let a = bench_args(&[]);
    assert_eq!((a.snapshots, a.writers, a.keep(), a.commits(), a.all_connections()), (0, 0, 100, false, 100));
    let a = bench_args(&["--scenario", "commit", "--snapshots", "10000", "--hot-tables", "1", "-c", "1"]);
    assert_eq!((a.keep(), a.commits(), a.all_connections()), (10_000, true, 1), "a big table keeps its size");
    let a = bench_args(&["--scenario", "get-namespace", "--rate", "2000", "-c", "20", "--writers", "2"]);
    assert!(a.commits(), "writers commit beside a read-only workload");
    assert_eq!(a.all_connections(), 22);
    let a = bench_args(&["--scenario", "fsync", "--dir", "/tmp", "-d", "3s"]);
    assert_eq!((a.workload(), a.dir.as_deref()), (Mix::single(OpKind::Fsync), Some(std::path::Path::new("/tmp"))));
    let e = execute(&bench_args(&["--mix", "health,fsync"])).unwrap_err();
    assert!(e.to_string().contains("fsync runs alone"), "{e}");
    assert!(run(bench_args(&["--scenario", "fsync"])).is_err(), "fsync without --dir");
}

#[test]
fn writers_commit_beside_open_loop_reads() {
    let (addr, tables) = fake_catalog::start();
    let url = format!("http://{addr}");
    let pid = std::process::id().to_string();
    let args = bench_args(&[
        "--target",
        &url,
        "--scenario",
        "config",
        "--rate",
        "200",
        "--connections",
        "4",
        "--writers",
        "2",
        "--shards",
        "1",
        "--hot-tables",
        "2",
        "--keep-snapshots",
        "5",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--namespace",
        "ns",
        "--server-pid",
        &pid,
    ]);
    let r = execute(&args).expect("bench runs");
    let table = r.to_table();
    assert_eq!(r.errors_total, 0, "{table}");
    assert_eq!((r.connections, r.writers, r.open_at_start, r.open_at_end), (6, 2, 6, 6), "{table}");
    let op = |name: &str| r.by_op.iter().find(|o| o.op == name).unwrap_or_else(|| panic!("no {name}: {table}"));
    // The readers keep their schedule (200/s for 1 s); the writers add commits.
    assert!((150..=210).contains(&op("config").ops), "{table}");
    assert!(op("commit").ops > 0, "{table}");
    assert_eq!(tables.lock().unwrap().len(), 2, "the writers' tables were created");
    assert!(table.contains("2 closed-loop commit writers"), "{table}");
    // This process is the "server": its CPU over the window, per operation.
    let cpu = r.server_cpu.expect("--server-pid reports CPU");
    assert!(cpu.ms_per_op.is_some() && table.contains("server cpu"), "{table}");
}
