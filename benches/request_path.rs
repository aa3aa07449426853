//! The whole request path over real TCP: a `bingsan serve` child process
//! with one shard, one keep-alive client connection, one request at a time.
//!
//! Time per request is the client's round trip on loopback. Allocations per
//! request are the server's own, read from its metrics (`--metrics-listen`,
//! served by the metrics thread, so scraping allocates nothing on the shard)
//! before and after a counted loop: `bingsan_allocs_total` (everything on
//! the shard thread), `bingsan_request_allocs_total` (the request path
//! only), `bingsan_alloc_bytes_total`, each summed over shards.
//!
//! The server binary: `$BINGSAN_BIN`, else the one cargo built for this
//! bench (`CARGO_BIN_EXE_bingsan`; `cargo bench` builds it with the bench
//! profile), else `target/release/bingsan` or `target/debug/bingsan`. With
//! none, the bench prints why and does nothing.
//!
//! The `commit` case appends to a table as a writer that expires old
//! snapshots sends it (see [`Appender`]), so the table's metadata keeps its
//! size: three snapshots and a full metadata log of 100 entries.
//!
//! `cargo bench --bench request_path` (`-- request/commit` for that case only)

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Counts;

#[global_allocator]
static A: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;

/// Children of the listed namespace.
const CHILDREN: usize = 100;

/// Snapshots the committed table keeps (its fixture has as many).
const KEPT_SNAPSHOTS: i64 = 3;

/// Commits before any is measured: the metadata log (at most 100 entries,
/// the fixture's `write.metadata.previous-versions-max`) is full by then.
const COMMIT_WARMUP: u64 = 110;

fn find_binary() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("BINGSAN_BIN").map(PathBuf::from),
        option_env!("CARGO_BIN_EXE_bingsan").map(PathBuf::from),
        Some(manifest.join("target/release/bingsan")),
        Some(manifest.join("target/debug/bingsan")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server process and its directory; both go away on drop, also when
/// the bench panics.
struct Server {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    fn start(bin: &Path) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "bingsan-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(dir.join("warehouse")).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--warehouse")
            .arg(dir.join("warehouse"))
            .args(["--shards", "1", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server { child, dir, addr, metrics };
        server.wait_ready();
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("server exited with {status} before it was ready:\n{}", self.log());
            }
            if let Ok(mut c) = Conn::open(self.addr) {
                if c.send(b"GET /health/ready HTTP/1.1\r\nHost: bench\r\n\r\n").map(|s| s == 200).unwrap_or(false) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server not ready after 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The metrics exposition, from the metrics thread.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM for a graceful exit; SIGKILL if it takes too long.
        // SAFETY: signalling our own child process by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sum over all series of one metric family (every label set).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum over the series of one family whose labels contain `label`.
fn metric_sum_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One keep-alive HTTP/1.1 connection; the receive buffer is reused, so the
/// client allocates nothing per request once warm.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { stream, buf: Vec::with_capacity(1 << 16), body: 0..0 })
    }

    /// Sends one complete request, reads its response (Content-Length
    /// framed, as Bingsan answers), returns the status.
    fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request)?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(std::io::Error::other)?;
        let status: u16 =
            head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("bad status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.body = head_end..head_end + length;
        Ok(status)
    }

    fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    /// A fixture call that must succeed.
    fn call(&mut self, method: &str, path: &str, body: &str) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let status = self.send(req.as_bytes()).unwrap();
        assert!(status == 200 || status == 204, "{method} {path}: {status} {}", String::from_utf8_lossy(self.body()));
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

/// The namespace `bench` with its children and two registered tables.
fn create_fixtures(server: &Server, conn: &mut Conn) {
    conn.call(
        "POST",
        "/v1/namespaces",
        r#"{"namespace":["bench"],"properties":{"owner":"bench","purpose":"benchmarks"}}"#,
    );
    for i in 0..CHILDREN {
        conn.call(
            "POST",
            "/v1/namespaces",
            &format!(r#"{{"namespace":["bench","child_{i:03}"],"properties":{{"owner":"bench"}}}}"#),
        );
    }
    for (name, columns, snapshots) in [("typical", 10, 3), ("wide", 120, 20), ("commits", 10, KEPT_SNAPSHOTS as usize)]
    {
        let location = server.dir.join("warehouse/bench").join(name);
        let file = location.join("metadata/00000-5d6e7f80-0000-4000-8000-000000000000.metadata.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let json = common::table_metadata_json(location.to_str().unwrap(), columns, snapshots);
        std::fs::write(&file, &json).unwrap();
        println!("fixture table {name}: {columns} columns, {snapshots} snapshots, {} bytes of metadata", json.len());
        conn.call(
            "POST",
            "/v1/namespaces/bench/register",
            &format!(r#"{{"name":"{name}","metadata-location":"{}"}}"#, file.display()),
        );
    }
}

/// The request body of each append to `bench.commits`, as a writer sends it
/// (like Spark's append with snapshot expiry): assert that `main` is still
/// at the parent, add the new snapshot, move `main` to it, and remove the
/// oldest snapshot so the table keeps [`KEPT_SNAPSHOTS`].
struct Appender {
    location: String,
    /// Commits sent so far.
    done: i64,
}

impl Appender {
    fn new(server: &Server) -> Appender {
        let location = server.dir.join("warehouse/bench/commits").to_str().unwrap().to_string();
        Appender { location, done: 0 }
    }

    fn next(&mut self) -> Vec<u8> {
        self.done += 1;
        let id = common::FIRST_SNAPSHOT_ID + KEPT_SNAPSHOTS - 1 + self.done;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let body = format!(
            concat!(
                r#"{{"requirements":[{{"type":"assert-ref-snapshot-id","ref":"main","snapshot-id":{parent}}}],"#,
                r#""updates":[{{"action":"add-snapshot","snapshot":{{"snapshot-id":{id},"parent-snapshot-id":{parent},"#,
                r#""sequence-number":{seq},"timestamp-ms":{now},"summary":{{"operation":"append","#,
                r#""spark.app.id":"local-1719000000000","added-data-files":"4","added-records":"1000","#,
                r#""added-files-size":"40960","changed-partition-count":"1","total-records":"{records}","#,
                r#""total-files-size":"{size}","total-data-files":"{files}","total-delete-files":"0","#,
                r#""total-position-deletes":"0","total-equality-deletes":"0"}},"#,
                r#""manifest-list":"{loc}/metadata/snap-{id}-1-c0ffee00-1b2c-4d3e-8f40-000000000000.avro","schema-id":0}}}},"#,
                r#"{{"action":"set-snapshot-ref","ref-name":"main","type":"branch","snapshot-id":{id}}},"#,
                r#"{{"action":"remove-snapshots","snapshot-ids":[{oldest}]}}]}}"#
            ),
            id = id,
            parent = id - 1,
            oldest = id - KEPT_SNAPSHOTS,
            seq = KEPT_SNAPSHOTS + self.done,
            now = now,
            records = 1000 * (KEPT_SNAPSHOTS + self.done),
            size = 40_960 * (KEPT_SNAPSHOTS + self.done),
            files = 4 * (KEPT_SNAPSHOTS + self.done),
            loc = self.location,
        );
        format!(
            "POST /v1/namespaces/bench/tables/commits HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Server-side allocation counters, summed over shards.
fn alloc_totals(server: &Server) -> (f64, f64, f64, f64) {
    // Let the shard finish the last request's bookkeeping first.
    std::thread::sleep(Duration::from_millis(50));
    let m = server.scrape();
    (
        metric_sum(&m, "bingsan_allocs_total"),
        metric_sum(&m, "bingsan_request_allocs_total"),
        metric_sum(&m, "bingsan_alloc_bytes_total"),
        metric_sum(&m, "bingsan_http_requests_total"),
    )
}

/// Times `one` (one request) with criterion, then counts the server's
/// allocations over a separate loop of it.
fn server_case(g: &mut common::Group<'_>, server: &Server, name: &str, one: impl Fn()) {
    g.custom(
        name,
        |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                one();
            }
            start.elapsed()
        },
        |iters| {
            one();
            let before = alloc_totals(server);
            for _ in 0..iters {
                one();
            }
            let after = alloc_totals(server);
            let requests = (after.3 - before.3) as u64;
            if requests != iters {
                println!("{name}: server counted {requests} requests for {iters} sent");
            }
            Counts {
                ops: iters,
                allocs: (after.0 - before.0) as u64,
                bytes: (after.2 - before.2) as u64,
                request_allocs: Some((after.1 - before.1) as u64),
            }
        },
    );
}

fn main() {
    let Some(bin) = find_binary() else {
        eprintln!(
            "request_path: no bingsan binary found (BINGSAN_BIN, CARGO_BIN_EXE_bingsan, target/release, target/debug); \
             run `cargo build --release` first. Skipping."
        );
        return;
    };
    println!("request_path: server binary {}", bin.display());
    let mut bench = common::Bench::new("request_path");
    let server = Server::start(&bin);
    let mut setup = Conn::open(server.addr).unwrap();
    create_fixtures(&server, &mut setup);
    drop(setup);

    let cases = [
        ("get_config", get("/v1/config")),
        ("get_namespace", get("/v1/namespaces/bench")),
        ("list_namespaces_100", get("/v1/namespaces?parent=bench")),
        ("load_table_typical", get("/v1/namespaces/bench/tables/typical")),
        ("load_table_wide", get("/v1/namespaces/bench/tables/wide")),
    ];
    let conn = RefCell::new(Conn::open(server.addr).unwrap());
    let send = |name: &str, req: &[u8]| {
        let status = conn.borrow_mut().send(req).unwrap();
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(conn.borrow().body()));
    };
    for (name, req) in &cases {
        send(name, req);
        println!("{name}: {} bytes of response body", conn.borrow().body().len());
    }
    let appender = RefCell::new(Appender::new(&server));
    for _ in 0..COMMIT_WARMUP {
        send("commit", &appender.borrow_mut().next());
    }
    println!("commit: {} bytes of response body", conn.borrow().body().len());

    let mut g = bench.group("request");
    for (name, req) in &cases {
        server_case(&mut g, &server, name, || send(name, req));
    }
    server_case(&mut g, &server, "commit", || send("commit", &appender.borrow_mut().next()));
    g.finish();

    let m = server.scrape();
    for pool in ["buffer", "arena", "token"] {
        let l = format!("pool=\"{pool}\"");
        let hits = metric_sum_where(&m, "bingsan_pool_hits_total", &l);
        let misses = metric_sum_where(&m, "bingsan_pool_misses_total", &l);
        println!(
            "server pool {pool}: hits {hits} misses {misses} hit rate {:.5} discards {} retained {} items / {} bytes",
            hits / (hits + misses).max(1.0),
            metric_sum_where(&m, "bingsan_pool_discards_total", &l),
            metric_sum_where(&m, "bingsan_pool_retained_count", &l),
            metric_sum_where(&m, "bingsan_pool_retained_bytes", &l),
        );
    }
    println!("server RSS {} bytes", metric_sum(&m, "process_resident_memory_bytes"));
    drop(conn);
    drop(server);
    bench.finish();
}
