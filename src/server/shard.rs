//! One shard: a pinned glommio executor with its own listener, pools and
//! counters. Nothing here is shared with other shards except `Shared`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use futures_lite::{AsyncWriteExt, FutureExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use std::panic::AssertUnwindSafe;

use super::service::{JsonLimits, ShardService};
use super::state::Shared;
use crate::fileio::FileIo;
use crate::http::{serve_connection, ConnLimits, ConnState, Transport};
use crate::metrics::ShardStats;
use crate::pool::{ArenaPool, BufPool, PoolConfig, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD};
use crate::routes::RouteConfig;
use crate::store::Store;

/// What a shard needs besides the shared state.
pub struct ShardSetup {
    pub id: usize,
    pub listen: SocketAddr,
    pub pools: PoolConfig,
    pub limits: ConnLimits,
    pub routes: RouteConfig,
    pub drain: Duration,
    pub max_connections: usize,
    /// Warehouse-writing requests run at once (see `ShardService::writes`).
    pub max_writes: usize,
    pub json: JsonLimits,
    /// Serve HTTPS with this acceptor (each shard terminates its own TLS).
    pub tls: Option<TlsAcceptor>,
}

/// Expires idempotency records now and then (one shard does it for all).
async fn sweep_idempotency_keys<S: Store, F: FileIo>(shared: Arc<Shared<S, F>>) {
    loop {
        let stop = or(
            async {
                glommio::timer::sleep(SWEEP_EVERY).await;
                false
            },
            async {
                shared.shutdown.wait().await;
                true
            },
        )
        .await;
        if stop {
            return;
        }
        let n = super::idempotency::sweep(&shared.catalog.store, crate::catalog::now_ms()).await;
        if n > 0 {
            tracing::debug!(expired = n, "swept idempotency records");
        }
    }
}

/// What a connection beyond the shard's limit is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 119\r\nConnection: close\r\n\r\n{\"error\":{\"message\":\"too many connections on this shard; retry later\",\"type\":\"ServiceUnavailableException\",\"code\":503}}";

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Runs a shard until shutdown; reports bind success or failure on `ready`.
pub async fn run<S: Store, F: FileIo>(setup: ShardSetup, shared: Arc<Shared<S, F>>, ready: Sender<Result<(), String>>) {
    let stats = shared.stats[setup.id].clone();
    // The stats live as long as the process (the metrics thread holds them).
    let leaked: &'static ShardStats = Box::leak(Box::new(stats.clone()));
    crate::alloc::count_this_thread(&leaked.allocs);
    ShardStats::install_for_this_thread(leaked);

    let p = setup.pools;
    let bufs = BufPool::new(p.buffer_initial, p.buffer_max, p.buffers_per_shard, stats.buffer_pool.clone());
    let arenas = ArenaPool::new(p.arena_max, p.arenas_per_shard, stats.arena_pool.clone());
    let listener = match TcpListener::bind(setup.listen) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {} cannot listen on {}: {e}", setup.id, setup.listen)));
            return;
        }
    };
    let svc = Rc::new(ShardService {
        shared: shared.clone(),
        routes: Rc::new(setup.routes),
        arenas,
        stats: stats.clone(),
        json: setup.json,
        tokens: BufPool::new(TOKEN_BUFFER, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD, stats.token_pool.clone()),
        writes: Semaphore::new(setup.max_writes as u64),
        vend_cache: Default::default(),
    });
    let open: Rc<RefCell<HashMap<i32, Rc<ConnState>>>> = Rc::default();
    shared.accepting.fetch_add(1, Ordering::AcqRel);
    let _ = ready.send(Ok(()));
    if setup.id == 0 {
        glommio::spawn_local(sweep_idempotency_keys(shared.clone())).detach();
    }

    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            shared.shutdown.wait().await;
            None
        })
        .await;
        let mut stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = setup.id, error = %e, "accept failed");
                // Out of descriptors: back off instead of spinning.
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.borrow().len() >= setup.max_connections {
            stats.connections_refused.store(stats.connections_refused.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            if setup.tls.is_none() {
                glommio::spawn_local(async move {
                    stream.set_wait_limit(Duration::from_secs(1));
                    let _ = stream.write_all(REFUSAL).await;
                })
                .detach();
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let state = Rc::new(ConnState::default());
        open.borrow_mut().insert(fd, state.clone());
        stats.connection_opened();
        let (svc, bufs, open, stats, limits) = (svc.clone(), bufs.clone(), open.clone(), stats.clone(), setup.limits);
        let tls = setup.tls.clone();
        glommio::spawn_local(async move {
            let serve = async {
                match tls {
                    None => serve_connection(&mut stream, &*svc, &bufs, &limits, &state).await,
                    Some(acceptor) => {
                        // The handshake is bounded like a request.
                        stream.set_wait_limit(limits.request_timeout);
                        // Plain HTTP on the TLS port gets nothing back, not even an alert.
                        // glommio's peek ignores read timeouts: bound it here.
                        let mut first = [0u8; 1];
                        let peeked = or(async { stream.peek(&mut first).await.ok() }, async {
                            glommio::timer::sleep(limits.request_timeout).await;
                            None
                        })
                        .await;
                        if peeked != Some(1) || first[0] != TLS_HANDSHAKE {
                            return;
                        }
                        if let Ok(mut tls) = acceptor.accept(stream).await {
                            serve_connection(&mut tls, &*svc, &bufs, &limits, &state).await;
                        }
                    }
                }
            };
            // A bug in one request must cost one connection, not the shard.
            let served = AssertUnwindSafe(serve).catch_unwind().await;
            if served.is_err() {
                tracing::error!(shard = stats.shard, "a request handler panicked; connection closed");
            }
            open.borrow_mut().remove(&fd);
            stats.connection_closed();
        })
        .detach();
    }

    shared.accepting.fetch_sub(1, Ordering::AcqRel);
    drop(listener);
    // Connections finish the request in hand (even one still arriving),
    // then close; idle keep-alive ones would wait forever, so end their reads.
    for (&fd, state) in open.borrow().iter() {
        state.closing.set(true);
        if state.idle.get() {
            // SAFETY: fd belongs to a live connection task on this thread.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }
    let deadline = Instant::now() + setup.drain;
    while !open.borrow().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(shard = setup.id, unfinished = open.borrow().len(), "shard stopped");
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusal_declares_its_body_length() {
        let text = std::str::from_utf8(super::REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize =
            head.split("Content-Length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        assert_eq!(declared, body.len());
    }
}
