//! Calibration server: the smallest thread-per-core HTTP/1.1 keep-alive
//! server glommio allows, answering every request with the same 200 JSON
//! body. Benchmarking it gives the machine's HTTP ceiling, to compare the
//! catalog against.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;

use super::args::parse_duration;
use super::runtime;

/// Fixed-response HTTP server for calibrating `bingsan bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct StaticArgs {
    /// Address to listen on (port 0 picks one).
    #[arg(long, env = "BINGSAN_STATIC_LISTEN", default_value = "127.0.0.1:8190")]
    pub listen: String,
    /// Shards (one pinned thread and SO_REUSEPORT listener each); default one
    /// per CPU in --cpus or per available core.
    #[arg(long, env = "BINGSAN_STATIC_SHARDS")]
    pub shards: Option<usize>,
    /// CPUs to pin the shards to, e.g. 0,1.
    #[arg(long, env = "BINGSAN_STATIC_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Size of the JSON body of every response, in bytes.
    #[arg(long, env = "BINGSAN_STATIC_BODY_SIZE", default_value_t = 512)]
    pub body_size: usize,
    /// Stop after this long (default: run until killed).
    #[arg(long, value_parser = parse_duration)]
    pub run_for: Option<Duration>,
}

/// How often shards check the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Requests larger than this (head + body) close the connection.
const MAX_REQUEST: usize = 1 << 20;

/// Runs until `--run-for` elapses (or forever).
pub fn run(args: StaticArgs) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let server = start(&args, stop.clone())?;
    eprintln!("static server on http://{} ({} shards, {}-byte body)", server.addr, server.shards.len(), args.body_size);
    if let Some(d) = args.run_for {
        std::thread::sleep(d);
        stop.store(true, Ordering::SeqCst);
    }
    server.join()
}

pub struct StaticServer {
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    shards: Vec<JoinHandle<io::Result<()>>>,
}

impl StaticServer {
    /// Waits for every shard to stop (after `stop` is set).
    pub fn join(self) -> io::Result<()> {
        self.shards.into_iter().try_for_each(runtime::join)
    }
}

/// Starts the shards and returns once all of them listen. The first shard
/// binds first so an ephemeral port is known before the others share it.
pub fn start(args: &StaticArgs, stop: Arc<AtomicBool>) -> io::Result<StaticServer> {
    let mut addr = args
        .listen
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "listen address did not resolve"))?;
    let cpus = runtime::shard_cpus(args.shards, args.cpus.as_deref())?;
    runtime::raise_nofile_to_hard();
    let response: Arc<[u8]> = response_bytes(args.body_size).into();
    let mut shards = Vec::with_capacity(cpus.len());
    for (i, &cpu) in cpus.iter().enumerate() {
        let (bound_tx, bound_rx) = mpsc::channel();
        let (shard_stop, response) = (stop.clone(), response.clone());
        let failed = Arc::new(AtomicBool::new(false));
        let handle = runtime::spawn_shard(format!("static-{i}"), cpu, failed, move || {
            shard(addr, response, shard_stop, bound_tx)
        })?;
        match bound_rx.recv() {
            Ok(Ok(bound)) => addr = bound,
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                return Err(e);
            }
            // The thread ended before binding: its error is in the handle.
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                runtime::join(handle)?;
                return Err(io::Error::other("static server shard exited early"));
            }
        }
        shards.push(handle);
    }
    Ok(StaticServer { addr, shards })
}

/// `200 OK` with a JSON body of exactly `size` bytes (at least 2).
fn response_bytes(size: usize) -> Vec<u8> {
    let size = size.max(2);
    let body = if size >= 10 {
        format!("{{\"pad\":\"{}\"}}", "x".repeat(size - 10))
    } else {
        format!("{{}}{}", " ".repeat(size - 2))
    };
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

async fn shard(
    addr: SocketAddr,
    response: Arc<[u8]>,
    stop: Arc<AtomicBool>,
    bound: mpsc::Sender<io::Result<SocketAddr>>,
) {
    let listener = match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
        Ok((local, l)) => {
            let _ = bound.send(Ok(local));
            l
        }
        Err(e) => {
            let _ = bound.send(Err(io::Error::other(format!("bind {addr}: {e}"))));
            return;
        }
    };
    // Per-shard copy: connection tasks share it without atomic refcounts.
    let response: Rc<[u8]> = Rc::from(&*response);
    futures_lite::future::or(accept_loop(listener, response), wait_for(stop)).await;
}

async fn wait_for(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        sleep(STOP_POLL).await;
    }
}

async fn accept_loop(listener: TcpListener, response: Rc<[u8]>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, response.clone())).detach();
            }
            // Usually EMFILE: back off instead of spinning.
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Answers every complete request in the buffer (pipelining included) with
/// one write, until the client closes or asks to.
async fn serve(mut stream: TcpStream, response: Rc<[u8]>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(response.len());
    loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let (used, close) = match answer(&buf[..filled], &response, &mut out) {
            Ok(x) => x,
            Err(()) => return,
        };
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if close {
            return;
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == buf.len() {
            if buf.len() >= MAX_REQUEST {
                return;
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Appends a response to `out` for each complete request in `buf`; returns
/// the bytes consumed and whether the client asked to close.
fn answer(buf: &[u8], response: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ()> {
    let mut pos = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(&buf[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok((pos, false)),
            Err(_) => return Err(()),
        };
        let mut body = 0;
        let mut close = req.version == Some(0);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                body = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()).ok_or(())?;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked uploads are not part of any benchmark.
                return Err(());
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = h.value.eq_ignore_ascii_case(b"close");
            }
        }
        if buf.len() - pos < head + body {
            return Ok((pos, false));
        }
        pos += head + body;
        out.extend_from_slice(response);
        if close {
            return Ok((pos, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::http1;

    #[test]
    fn response_has_exact_json_body() {
        for size in [2, 5, 10, 11, 512, 4096] {
            let mut bytes = response_bytes(size);
            let r = http1::parse_response(&mut bytes, false, false).unwrap().unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body.len(), size);
            let _: sonic_rs::Value = sonic_rs::from_slice(&bytes[r.body]).unwrap();
        }
    }

    #[test]
    fn answers_pipelined_requests_and_waits_for_bodies() {
        let resp = b"R";
        let mut out = Vec::new();
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let two = [&get[..], b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"].concat();
        let two = two.as_slice();
        assert_eq!(answer(two, resp, &mut out), Ok((two.len(), false)));
        assert_eq!(out, b"RR");
        out.clear();
        let partial = &two[..two.len() - 1];
        assert_eq!(answer(partial, resp, &mut out), Ok((get.len(), false)));
        out.clear();
        let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(answer(close, resp, &mut out), Ok((37, true)));
        assert_eq!(out, b"R");
        assert!(answer(b"BAD\x00\r\n\r\n", resp, &mut out).is_err());
    }
}
