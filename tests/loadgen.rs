//! `bingsan bench` against a real `bingsan serve`: a short closed-loop
//! load-table run and a load-table=90,commit=10 mix, both without errors and
//! with the server's pools in use, then a clean SIGTERM shutdown; and the
//! write-path scenarios of issue 14 (big-table commits, reads beside
//! writers, the disk's fsync rate) for a second each.
//!
//! Everything is bounded: server start-up, each bench run and the shutdown
//! have their own deadline, and the server is killed if the test fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bingsan");

/// A loopback port that was free a moment ago, below the kernel's
/// ephemeral range and never handed out before by this process: a port
/// from that range can be taken, between this pick and the server's bind,
/// by an outgoing connection (the other test's bench clients, say). The
/// search starts at a place of this process's own, so runs side by side
/// do not hand out the same ports.
fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = ephemeral_low.saturating_sub(10_000);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        if n >= span {
            break;
        }
        let port = (10_000 + start.wrapping_add(n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// Waits for `child` until `deadline`; kills it and returns `None` if it is
/// still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on a fresh connection; the status code, if any answer came.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A running `bingsan serve` with its own directories; killed (and the
/// directories removed) on drop unless it was already stopped.
struct Server {
    child: Child,
    port: u16,
    metrics_port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("bingsan-loadgen-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("warehouse")).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let log = File::create(dir.join("server.log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--shards", "1"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--warehouse")
            .arg(dir.join("warehouse"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn bingsan serve");
        let mut server = Server { child, port, metrics_port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while http_status(port, "/health/ready") != Some(200) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited during start-up ({status}):\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "server not ready within 15 s:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (bounded).
    fn terminate(&mut self) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        wait_until(&mut self.child, Instant::now() + Duration::from_secs(15))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `bingsan bench ... --json` (bounded) and parses its report.
fn bench(server: &Server, workload: &[&str]) -> serde_json::Value {
    let mut args = workload.to_vec();
    args.extend(["--connections", "20", "--duration", "2s"]);
    run_bench(&args, Some(server))
}

/// `bingsan bench` with `args` (against `server` when given), bounded to 20 s.
fn run_bench(args: &[&str], server: Option<&Server>) -> serde_json::Value {
    let target = server.map_or_else(Vec::new, |s| {
        vec![
            "--target".to_string(),
            format!("http://127.0.0.1:{}", s.port),
            "--metrics-url".to_string(),
            format!("http://127.0.0.1:{}/metrics", s.metrics_port),
        ]
    });
    let workload = args;
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(target)
        .args(workload)
        .args(["--shards", "1", "--warmup", "500ms", "--timeout", "5s"])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bingsan bench");
    let drain = |r: Option<Box<dyn Read + Send>>| -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(20));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("bench {workload:?} ran over 20 s:\n{err}"));
    let log = server.map(Server::log).unwrap_or_default();
    assert!(status.success(), "bench {workload:?} failed ({status}):\n{err}\nserver log:\n{log}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench JSON ({e}):\n{out}\n{err}"))
}

fn u64_of(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// The common assertions: requests made, none failed, all connections
/// opened, pools hit.
fn check(report: &serde_json::Value, what: &str, server: &Server) {
    let ctx = || format!("{what}: {report}\nserver log:\n{}", server.log());
    assert!(u64_of(report, "http_requests") > 0, "no requests; {}", ctx());
    assert!(u64_of(report, "ops") > 0, "no operations; {}", ctx());
    assert_eq!(u64_of(report, "errors_total"), 0, "errors; {}", ctx());
    assert_eq!(u64_of(report, "connected"), u64_of(report, "connections"), "connections; {}", ctx());
    let srv = &report["server"];
    assert_eq!(srv["scraped"].as_bool(), Some(true), "no /metrics; {}", ctx());
    let hit = srv["pool_hit_rate"].as_f64().unwrap_or(0.0);
    assert!(hit > 0.0, "pool hit rate {hit}; {}", ctx());
}

#[test]
fn bench_drives_a_real_server() {
    let started = Instant::now();
    let mut server = Server::start();

    let read = bench(&server, &["--scenario", "load-table"]);
    check(&read, "load-table", &server);
    assert_eq!(read["workload"].as_str(), Some("load-table"));
    assert_eq!(read["status"]["200"].as_u64(), read["http_requests"].as_u64());

    let mix = bench(&server, &["--mix", "load-table=90,commit=10"]);
    check(&mix, "mix", &server);
    let ops_of = |op: &str| {
        mix["by_op"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["op"] == op))
            .and_then(|o| o["ops"].as_u64())
            .unwrap_or(0)
    };
    assert!(ops_of("load-table") > 0, "no load-table in the mix: {mix}");
    assert!(ops_of("commit") > 0, "no commit succeeded in the mix: {mix}");

    let status = server.terminate();
    let log = server.log();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "server did not exit 0 after SIGTERM ({status:?}):\n{log}");
    assert!(started.elapsed() < Duration::from_secs(45), "took {:?}", started.elapsed());
}

/// The body of `GET path` on a fresh connection (the server answers loads
/// with a Content-Length).
fn http_get_json(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {head}"))
}

#[test]
fn write_scenarios_drive_a_real_server() {
    let started = Instant::now();
    let server = Server::start();
    let pid = server.child.id().to_string();

    // Commits on tables built with 300 snapshots: each appends one and
    // expires the oldest, so the tables keep their size.
    let big = run_bench(
        &[
            "--scenario",
            "commit",
            "--snapshots",
            "300",
            "--hot-tables",
            "2",
            "-c",
            "2",
            "--duration",
            "1s",
            "--namespace",
            "smoke",
            "--server-pid",
            pid.as_str(),
        ],
        Some(&server),
    );
    check(&big, "commit --snapshots 300", &server);
    let cpu = big["server_cpu"]["ms_per_op"].as_f64().unwrap_or(0.0);
    assert!(cpu > 0.0, "server CPU per commit {cpu}: {big}");
    for t in ["big300_0", "big300_1"] {
        let loaded = http_get_json(server.port, &format!("/v1/namespaces/smoke/tables/{t}"));
        let snapshots = loaded["metadata"]["snapshots"].as_array().map_or(0, Vec::len);
        assert_eq!(snapshots, 300, "{t} kept its size after {} commits", u64_of(&big, "ops"));
    }

    // Open-loop reads with a writer committing to a big table beside them.
    let mixed = run_bench(
        &[
            "--scenario",
            "get-namespace",
            "--rate",
            "200",
            "-c",
            "4",
            "--writers",
            "1",
            "--duration",
            "3s",
            "--hot-tables",
            "1",
            "--snapshots",
            "300",
            "--namespace",
            "smoke",
        ],
        Some(&server),
    );
    check(&mixed, "reads beside a writer", &server);
    let ops_of = |op: &str| {
        mixed["by_op"].as_array().and_then(|ops| ops.iter().find(|o| o["op"] == op)).and_then(|o| o["ops"].as_u64())
    };
    let reads = ops_of("get-namespace").unwrap_or(0);
    // A loaded debug build may take most of a second per big commit: 3 s
    // leave the writer time for one.
    assert!((450..=630).contains(&reads), "reads keep their 200/s schedule: {mixed}");
    assert!(ops_of("commit").unwrap_or(0) > 0, "the writer committed: {mixed}");
    assert_eq!(mixed["writers"].as_u64(), Some(1));

    // The disk's own rate, no server involved.
    let fsync = run_bench(&["--scenario", "fsync", "--dir", server.dir.to_str().unwrap(), "--duration", "300ms"], None);
    for pass in ["sequential", "parallel"] {
        assert!(fsync[pass]["syncs"].as_u64().unwrap_or(0) > 0, "{pass}: {fsync}");
    }
    assert_eq!(fsync["parallel"]["writers"].as_u64(), Some(8));
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}
