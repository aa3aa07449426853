//! One shard: a pinned glommio executor with its own listener, pools and
//! counters. Nothing here is shared with other shards except `Shared`.

use std::cell::Cell;
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
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use std::panic::AssertUnwindSafe;

use super::service::{JsonLimits, ShardService};
use super::state::Shared;
use crate::fileio::FileIo;
use crate::http::{serve_connection, ConnLimits, ConnState, Serving, Transport};
use crate::metrics::ShardStats;
use crate::pool::{ArenaPool, BufPool, FutureSlots, PoolConfig, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD};
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

/// Sleeps for `period`; true if shutdown began meanwhile.
async fn sleep_or_shutdown<S: Store, F: FileIo>(shared: &Shared<S, F>, period: Duration) -> bool {
    or(
        async {
            glommio::timer::sleep(period).await;
            false
        },
        async {
            shared.shutdown.wait().await;
            true
        },
    )
    .await
}

/// Expires idempotency records now and then (one shard does it for all).
async fn sweep_idempotency_keys<S: Store, F: FileIo>(shared: Arc<Shared<S, F>>) {
    loop {
        if sleep_or_shutdown(&shared, SWEEP_EVERY).await {
            return;
        }
        let mut n = 0;
        for served in &shared.warehouses {
            n += super::idempotency::sweep(&served.catalog.store, crate::catalog::now_ms()).await;
        }
        if n > 0 {
            tracing::debug!(expired = n, "swept idempotency records");
        }
    }
}

/// Closes keep-alive connections idle longer than the idle timeout: one
/// scan of the shard's table every quarter timeout (at most every second)
/// instead of a timer per idle connection. A connection closes between
/// 1 and 1.25 idle timeouts (or the timeout plus a second) after it idled.
async fn close_idle_connections<S: Store, F: FileIo>(conns: Rc<Conns<S, F>>, shared: Arc<Shared<S, F>>) {
    let every = (conns.serving.limits.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        if sleep_or_shutdown(&shared, every).await {
            return;
        }
        let now = Instant::now();
        for (fd, state) in conns.table.each_open() {
            if state.idle_expired(&conns.serving.limits, now) {
                state.set_busy();
                // SAFETY: fd belongs to a live connection task on this
                // thread; its wait then reads end-of-stream and closes.
                unsafe { libc::shutdown(fd, libc::SHUT_RD) };
            }
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
    let svc = ShardService {
        shared: shared.clone(),
        routes: Rc::new(setup.routes),
        arenas,
        stats: stats.clone(),
        json: setup.json,
        tokens: BufPool::new(TOKEN_BUFFER, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD, stats.token_pool.clone()),
        writes: Semaphore::new(setup.max_writes as u64),
        vend_cache: Default::default(),
    };
    let conns = Rc::new(Conns {
        serving: Serving { svc, bufs, slots: FutureSlots::new(p.buffers_per_shard), limits: setup.limits },
        table: ConnTable::new(descriptor_limit()),
        stats: stats.clone(),
    });
    shared.accepting.fetch_add(1, Ordering::AcqRel);
    let _ = ready.send(Ok(()));
    if setup.id == 0 {
        glommio::spawn_local(sweep_idempotency_keys(shared.clone())).detach();
    }
    glommio::spawn_local(close_idle_connections(conns.clone(), shared.clone())).detach();

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
        let fd = stream.as_raw_fd();
        if conns.table.open.get() >= setup.max_connections || !conns.table.opened(fd) {
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
        stats.connection_opened();
        // Two task types, so a plain connection's task does not carry the
        // TLS handshake's state.
        match setup.tls.clone() {
            None => glommio::spawn_local(serve_plain(conns.clone(), stream)).detach(),
            Some(acceptor) => glommio::spawn_local(serve_tls(conns.clone(), stream, acceptor)).detach(),
        };
    }

    shared.accepting.fetch_sub(1, Ordering::AcqRel);
    drop(listener);
    // Connections finish the request in hand (even one still arriving),
    // then close; idle keep-alive ones would wait forever, so end their reads.
    for (fd, state) in conns.table.each_open() {
        state.closing.set(true);
        if state.is_idle() {
            // SAFETY: fd belongs to a live connection task on this thread.
            unsafe { libc::shutdown(fd, libc::SHUT_RD) };
        }
    }
    let deadline = Instant::now() + setup.drain;
    while conns.table.open.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shared.store.release_thread();
    tracing::info!(shard = setup.id, unfinished = conns.table.open.get(), "shard stopped");
}

/// What the connection tasks of a shard share: one pointer per task, so an
/// idle connection's task stays small.
struct Conns<S: Store, F: FileIo> {
    serving: Serving<ShardService<S, F>>,
    table: ConnTable,
    stats: Arc<ShardStats>,
}

/// The shard's open connections, by descriptor: an entry per possible fd
/// (they are below RLIMIT_NOFILE), so a connection costs no allocation or
/// map entry here. Pages of the table are touched only up to the highest
/// descriptor used.
struct ConnTable {
    slots: Box<[ConnState]>,
    /// Connections open now.
    open: Cell<usize>,
    /// One past the highest descriptor ever opened (bounds the drain's scan).
    high: Cell<usize>,
}

impl ConnTable {
    fn new(descriptors: usize) -> ConnTable {
        let descriptors = descriptors.max(1);
        let layout = std::alloc::Layout::array::<ConnState>(descriptors).expect("table size fits");
        // Zeroed memory from the allocator: large, so mapped and touched
        // only where descriptors are used, not all at start.
        // SAFETY: all zeroes is a valid `ConnState` (false flags, not idle), the layout is that of `descriptors` slots, and
        // the box frees it with the same layout.
        let slots = unsafe {
            let ptr = std::alloc::alloc_zeroed(layout).cast::<ConnState>();
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, descriptors))
        };
        ConnTable { slots, open: Cell::new(0), high: Cell::new(0) }
    }

    /// Marks `fd` open with a fresh state; false if it is out of range.
    fn opened(&self, fd: i32) -> bool {
        let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.slots.get(i)) else {
            return false;
        };
        slot.open.set(true);
        slot.set_busy();
        slot.closing.set(false);
        self.open.set(self.open.get() + 1);
        self.high.set(self.high.get().max(fd as usize + 1));
        true
    }

    fn state(&self, fd: i32) -> &ConnState {
        &self.slots[fd as usize]
    }

    fn closed(&self, fd: i32) {
        self.slots[fd as usize].open.set(false);
        self.open.set(self.open.get() - 1);
    }

    fn each_open(&self) -> impl Iterator<Item = (i32, &ConnState)> {
        self.slots[..self.high.get()].iter().enumerate().filter(|(_, s)| s.open.get()).map(|(fd, s)| (fd as i32, s))
    }
}

/// Descriptors this process may have open (the table's size).
fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 65_536;
    }
    limit.rlim_cur.min(1 << 20) as usize
}

impl<S: Store, F: FileIo> Conns<S, F> {
    /// Forgets a connection; a panic in one request cost that connection,
    /// not the shard.
    fn closed(&self, fd: i32, panicked: bool) {
        if panicked {
            tracing::error!(shard = self.stats.shard, "a request handler panicked; connection closed");
        }
        self.table.closed(fd);
        self.stats.connection_closed();
    }
}

async fn serve_plain<S: Store, F: FileIo>(conns: Rc<Conns<S, F>>, mut stream: TcpStream) {
    let (c, fd) = (&*conns, stream.as_raw_fd());
    let served = AssertUnwindSafe(serve_connection(&mut stream, &c.serving, c.table.state(fd))).catch_unwind().await;
    c.closed(fd, served.is_err());
}

async fn serve_tls<S: Store, F: FileIo>(conns: Rc<Conns<S, F>>, mut stream: TcpStream, acceptor: TlsAcceptor) {
    let (c, fd) = (&*conns, stream.as_raw_fd());
    // The handshake is bounded like a request.
    let timeout = c.serving.limits.request_timeout;
    stream.set_wait_limit(timeout);
    // Plain HTTP on the TLS port gets nothing back, not even an alert.
    // glommio's peek ignores read timeouts: bound it here.
    let mut first = [0u8; 1];
    let peeked = or(async { stream.peek(&mut first).await.ok() }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await;
    let mut panicked = false;
    if peeked == Some(1) && first[0] == TLS_HANDSHAKE {
        if let Ok(mut tls) = acceptor.accept(stream).await {
            let serve = serve_connection(&mut tls, &c.serving, c.table.state(fd));
            panicked = AssertUnwindSafe(serve).catch_unwind().await.is_err();
        }
    }
    c.closed(fd, panicked);
}

#[cfg(test)]
mod tests {
    use crate::fileio::LocalFileIo;
    use crate::store::SledStore;

    fn returned_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// An idle plain connection's task holds only its socket, a few
    /// pointers and the readiness wait; the request state runs in a pooled
    /// slot (it was ~3 KB in the task, most of an idle connection's cost).
    #[test]
    fn the_connection_table_starts_zeroed_and_tracks_connections() {
        let t = super::ConnTable::new(4);
        assert_eq!(t.each_open().count(), 0);
        assert!(t.opened(3) && !t.opened(4), "descriptors beyond the table are refused");
        let limits = crate::http::ConnLimits {
            max_head: 1,
            max_body: 1,
            request_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_millis(50),
        };
        t.state(3).set_idle(std::time::Instant::now()); // starts the idle clock's epoch
        let now = std::time::Instant::now();
        t.state(3).set_idle(now);
        assert!(t.state(3).is_idle() && !t.state(3).idle_expired(&limits, now));
        assert!(t.state(3).idle_expired(&limits, now + std::time::Duration::from_millis(50)));
        assert_eq!(t.each_open().map(|(fd, _)| fd).collect::<Vec<_>>(), vec![3]);
        t.closed(3);
        assert_eq!((t.open.get(), t.each_open().count()), (0, 0));
    }

    #[test]
    fn an_idle_connection_task_stays_small() {
        let plain = returned_size(super::serve_plain::<SledStore, LocalFileIo>);
        eprintln!("plain connection future: {plain} bytes");
        assert!(plain <= 448, "plain connection future is {plain} bytes");
    }

    #[test]
    fn refusal_declares_its_body_length() {
        let text = std::str::from_utf8(super::REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize =
            head.split("Content-Length: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
        assert_eq!(declared, body.len());
    }
}
