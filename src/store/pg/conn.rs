//! PostgreSQL connections of one shard: `tokio-postgres` over glommio's
//! TCP stream (no tokio runtime), each connection driven by a task on the
//! shard's own executor.
//!
//! A shard keeps a fixed number of connections; concurrent requests share
//! them, and `tokio-postgres` pipelines their queries. A driver task per
//! connection owns its lifetime: it connects, prepares the statements,
//! serves until the connection ends, then reconnects with backoff, so a
//! restarted database is picked up without restarting Bingsan. While a
//! connection is down, requests that need it fail at once (503) instead of
//! queueing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::TcpStream;
use tokio_postgres::{Client, Config, NoTls, Statement};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::super::StoreError;
use crate::disk::Cause;

/// Longest a TCP connect plus start-up may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Server-side bound of every statement (`statement_timeout`).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Client-side bound of every query: the statement timeout plus slack for
/// the network, so a silent server never holds a request for longer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a request waits for its shard's first connection.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(6);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where and how to connect (shared by every shard).
pub struct Target {
    pub config: Config,
    /// Resolved once, off the shards: resolving a name blocks.
    pub addrs: Vec<SocketAddr>,
    /// `SET` commands run on every new connection.
    pub session: String,
}

/// The statements every connection prepares once.
pub struct Statements {
    pub get: Statement,
    /// Keys in `[lower, upper)`, in order, one page.
    pub scan_bounded: Statement,
    /// Keys from `lower` on (a prefix with no successor).
    pub scan_open: Statement,
    pub apply: Statement,
}

/// One live connection.
pub struct Conn {
    pub client: Client,
    pub stmts: Statements,
}

pub const PAGE: i64 = 256;

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    Ok(Statements {
        get: client.prepare("SELECT version, value FROM bingsan_kv WHERE key = $1").await?,
        scan_bounded: client
            .prepare("SELECT key, version, value FROM bingsan_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3")
            .await?,
        scan_open: client
            .prepare("SELECT key, version, value FROM bingsan_kv WHERE key >= $1 ORDER BY key LIMIT $2")
            .await?,
        apply: client.prepare("SELECT bingsan_apply($1, $2, $3, $4)").await?,
    })
}

/// Runs `fut`, or fails with a timeout after `limit`.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    or(fut, async {
        glommio::timer::sleep(limit).await;
        Err(StoreError::Io(Cause::Timeout, "the database did not answer in time".into()))
    })
    .await
}

/// A database failure as a store error; the text goes to the log only.
pub fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(Cause::Unavailable, format!("{what}: {e}"))
}

/// Opens one connection and returns it with the future that drives it.
/// Needs a glommio executor (the TCP stream is glommio's).
pub async fn connect(
    target: &Target,
) -> Result<(Client, impl Future<Output = Result<(), tokio_postgres::Error>>), StoreError> {
    bounded(CONNECT_TIMEOUT, async {
        let mut last = None;
        for addr in &target.addrs {
            match TcpStream::connect(*addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (client, connection) = target
                        .config
                        .connect_raw(stream.compat(), NoTls)
                        .await
                        .map_err(|e| unavailable("cannot start a database session", e))?;
                    return Ok((client, connection));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(unavailable("cannot connect to the database", last.map_or("no address".into(), |e| e.to_string())))
    })
    .await
}

/// Connects, sets the session up and prepares the statements; the
/// connection is driven meanwhile. Returns the connection and its driver.
async fn open(target: &Target) -> Result<(Conn, impl Future<Output = ()>), StoreError> {
    let (client, connection) = connect(target).await?;
    let mut connection = Box::pin(connection);
    let setup = async {
        client.batch_execute(&target.session).await.map_err(|e| unavailable("cannot set the session up", e))?;
        prepare(&client).await.map_err(|e| unavailable("cannot prepare statements (is the schema migrated?)", e))
    };
    let driven = async {
        let e = (&mut connection).await.err();
        Err(unavailable("connection closed during set-up", e.map_or("closed".into(), |e| e.to_string())))
    };
    let stmts = bounded(CONNECT_TIMEOUT, or(setup, driven)).await?;
    let driver = async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection lost");
        }
    };
    Ok((Conn { client, stmts }, driver))
}

/// One shard's connections.
pub struct ShardConns {
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    next: Cell<usize>,
    /// Whether any connection has been up yet: until then requests wait
    /// (bounded) for the first one instead of failing.
    started: Cell<bool>,
    /// The drivers: dropping them (with `self`) cancels them, which closes
    /// their connections.
    drivers: RefCell<Vec<glommio::Task<()>>>,
}

impl ShardConns {
    /// Starts `n` connection drivers on the running executor.
    pub fn start(target: Arc<Target>, n: usize) -> Rc<ShardConns> {
        let conns = Rc::new(ShardConns {
            slots: RefCell::new(vec![None; n]),
            next: Cell::new(0),
            started: Cell::new(false),
            drivers: RefCell::new(Vec::with_capacity(n)),
        });
        for slot in 0..n {
            let driver = glommio::spawn_local(drive(Rc::downgrade(&conns), target.clone(), slot));
            conns.drivers.borrow_mut().push(driver);
        }
        conns
    }

    fn pick(&self) -> Option<Rc<Conn>> {
        let slots = self.slots.borrow();
        let n = slots.len();
        for i in 0..n {
            let at = (self.next.get() + i) % n;
            if let Some(c) = &slots[at] {
                if !c.client.is_closed() {
                    self.next.set(at + 1);
                    return Some(c.clone());
                }
            }
        }
        None
    }

    /// A live connection, round-robin; fails at once while all are down.
    pub async fn get(&self) -> Result<Rc<Conn>, StoreError> {
        if let Some(c) = self.pick() {
            return Ok(c);
        }
        if !self.started.get() {
            let waited = bounded(FIRST_CONNECTION_WAIT, async {
                loop {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    if let Some(c) = self.pick() {
                        return Ok(c);
                    }
                }
            })
            .await;
            if let Ok(c) = waited {
                return Ok(c);
            }
        }
        Err(StoreError::Io(Cause::Unavailable, "no database connection is up".into()))
    }
}

/// Keeps connection `slot` up until its shard's executor ends (or the
/// shard's connections are dropped).
async fn drive(conns: std::rc::Weak<ShardConns>, target: Arc<Target>, slot: usize) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match open(&target).await {
            Ok((conn, driver)) => {
                let Some(shard) = conns.upgrade() else { return };
                shard.slots.borrow_mut()[slot] = Some(Rc::new(conn));
                shard.started.set(true);
                drop(shard);
                backoff = BACKOFF_MIN;
                driver.await;
                let Some(shard) = conns.upgrade() else { return };
                shard.slots.borrow_mut()[slot] = None;
            }
            Err(e) => {
                if conns.strong_count() == 0 {
                    return;
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database connection failed");
            }
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
