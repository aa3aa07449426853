//! The PostgreSQL store: one table `bingsan_kv (key bytea primary key,
//! version bigint, value bytea)`, shared by any number of Bingsan nodes.
//!
//! Every read goes to the database (no shard cache): another node may have
//! committed since, and the primary is the one place that knows. That makes
//! reads linearizable and read-your-writes hold across nodes, at the cost of
//! one round trip per read (`docs/architecture.md`). A batch of
//! compare-and-swap writes is one call of `bingsan_apply`, so one
//! transaction; it is durable once PostgreSQL answers (its commit is).

mod conn;
pub mod migrate;

use std::cell::RefCell;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_postgres::Config;

use self::conn::{bounded, unavailable, Conn, ShardConns, Target, PAGE, QUERY_TIMEOUT, STATEMENT_TIMEOUT};
use super::timer::Timer;
use super::{Expect, Op, Store, StoreError, Versioned, Write};
use crate::disk::Cause;
use crate::metrics::StoreOp;

/// SQLSTATE `bingsan_apply` raises for a failed expectation.
const CONFLICT: &str = "BS409";
/// A batch that lost a deadlock or a serialization race did nothing: retry.
const RETRYABLE: [&str; 2] = ["40P01", "40001"];
const ATTEMPTS: usize = 3;

/// A PostgreSQL database behind `Store`; each shard opens its own
/// connections on first use (`conn.rs`).
pub struct PgStore {
    target: Arc<Target>,
    schema: Option<String>,
    per_shard: usize,
    /// Identifies this store's connections in a thread's list.
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's connections, by store id.
    static SHARDS: RefCell<Vec<(u64, Rc<ShardConns>)>> = const { RefCell::new(Vec::new()) };
}

/// A stored value read from the database.
#[derive(Clone, Debug)]
pub struct PgValue(Vec<u8>);

impl AsRef<[u8]> for PgValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Whether `url` names a PostgreSQL store rather than a sled directory.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Splits our own `schema=` parameter off a connection URL (libpq's syntax
/// has no such parameter; `options=-c search_path=...` works too).
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("schema=") {
            Some(s) => {
                schema = Some(s.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

impl PgStore {
    /// Parses `url` and resolves its hosts (on the calling thread: never a
    /// shard). Connects nothing yet.
    pub fn new(url: &str, per_shard: usize) -> Result<PgStore, String> {
        let (url, schema) = split_schema(url);
        let mut config: Config = url.parse().map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
        if config.get_application_name().is_none() {
            config.application_name("bingsan");
        }
        let ports = config.get_ports();
        let mut addrs = Vec::new();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let tokio_postgres::config::Host::Tcp(name) = host else {
                return Err("PostgreSQL over a Unix socket is not supported: give a host".into());
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let found = (name.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve {name}: {e}"))?;
            addrs.extend(found);
        }
        if addrs.is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        let timeout = STATEMENT_TIMEOUT.as_millis();
        let mut session = format!("SET statement_timeout = {timeout}; SET lock_timeout = {timeout};");
        if let Some(s) = &schema {
            session.push_str(&format!(" SET search_path TO {};", migrate::quote(s)));
        }
        Ok(PgStore {
            target: Arc::new(Target { config, addrs, session }),
            schema,
            per_shard: per_shard.max(1),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Migrates the schema over a connection of its own; fails when the
    /// database is unreachable or its schema is newer than this binary's.
    /// Needs a glommio executor.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let (client, connection) = conn::connect(&self.target).await?;
        let driver = glommio::spawn_local(connection);
        let work = async {
            // search_path may name a schema that does not exist yet: allowed.
            client
                .batch_execute(&self.target.session)
                .await
                .map_err(|e| unavailable("cannot set the session up", e))?;
            migrate::migrate(&client, self.schema.as_deref()).await
        };
        let outcome = bounded(std::time::Duration::from_secs(60), work).await;
        drop(client);
        let _ = driver.await;
        outcome
    }

    /// This shard's connections, started on first use.
    fn shard(&self) -> Rc<ShardConns> {
        SHARDS.with(|s| {
            let mut shards = s.borrow_mut();
            if let Some((_, c)) = shards.iter().find(|(id, _)| *id == self.id) {
                return c.clone();
            }
            let c = ShardConns::start(self.target.clone(), self.per_shard);
            shards.push((self.id, c.clone()));
            c
        })
    }

    async fn conn(&self) -> Result<Rc<Conn>, StoreError> {
        self.shard().get().await
    }

    /// How many keys the store holds (for `bingsan store copy`).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn.client.query_one("SELECT count(*) FROM bingsan_kv", &[]).await.map_err(read_failed)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Removes every key (a forced `bingsan store copy`).
    pub async fn clear(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client.batch_execute("TRUNCATE bingsan_kv").await.map_err(|e| unavailable("cannot clear the store", e))
    }

    /// Writes `rows` (key, version, value) as they are, versions included,
    /// in one statement (`bingsan store copy`).
    pub async fn copy_in(&self, rows: &[(Vec<u8>, u64, Vec<u8>)]) -> Result<(), StoreError> {
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.0.as_slice()).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.1 as i64).collect();
        let values: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
        let conn = self.conn().await?;
        let sql = "INSERT INTO bingsan_kv SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) \
                   ON CONFLICT (key) DO UPDATE SET version = excluded.version, value = excluded.value";
        let copied = conn.client.execute(sql, &[&keys, &versions, &values]).await;
        copied.map(drop).map_err(|e| unavailable("cannot copy into the store", e))
    }
}

/// A failed read: nothing changed, so the database is just unavailable.
fn read_failed(e: tokio_postgres::Error) -> StoreError {
    let cause = match e.code() {
        Some(c) if c.code() == "57014" => Cause::Timeout,
        _ => Cause::Unavailable,
    };
    StoreError::Io(cause, format!("database read failed: {e}"))
}

/// The successor of every key starting with `prefix`, if any.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

impl Store for PgStore {
    type Value = PgValue;

    async fn get(&self, key: &[u8]) -> Result<Option<Versioned<PgValue>>, StoreError> {
        let _timer = Timer::start(StoreOp::Get);
        let conn = self.conn().await?;
        let row = bounded(QUERY_TIMEOUT, async {
            conn.client.query_opt(&conn.stmts.get, &[&key]).await.map_err(read_failed)
        })
        .await?;
        Ok(row.map(|r| Versioned { version: r.get::<_, i64>(0) as u64, value: PgValue(r.get(1)) }))
    }

    async fn scan<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8], Versioned<&[u8]>) -> bool,
    {
        let _timer = Timer::start(StoreOp::Scan);
        let upper = successor(prefix);
        // The first key after `after` is `after` followed by a zero byte.
        let mut lower = match after {
            Some(a) if a >= prefix => [a, &[0]].concat(),
            _ => prefix.to_vec(),
        };
        // Paged, so a huge namespace is never held at once.
        loop {
            let conn = self.conn().await?;
            let rows = bounded(QUERY_TIMEOUT, async {
                let lower = lower.as_slice();
                let rows = match &upper {
                    Some(u) => conn.client.query(&conn.stmts.scan_bounded, &[&lower, &u.as_slice(), &PAGE]).await,
                    None => conn.client.query(&conn.stmts.scan_open, &[&lower, &PAGE]).await,
                };
                rows.map_err(read_failed)
            })
            .await?;
            for row in &rows {
                let version: i64 = row.get(1);
                if !visit(row.get(0), Versioned { version: version as u64, value: row.get(2) }) {
                    return Ok(());
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => lower = [last.get::<_, &[u8]>(0), &[0]].concat(),
                _ => return Ok(()),
            }
        }
    }

    async fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let _timer = Timer::start(StoreOp::Apply);
        if writes.is_empty() {
            return Ok(());
        }
        let keys: Vec<&[u8]> = writes.iter().map(|w| w.key).collect();
        let expects: Vec<i64> = writes
            .iter()
            .map(|w| match w.expect {
                Expect::Absent => -1,
                Expect::Present => -2,
                Expect::Any => -3,
                Expect::Version(v) => v as i64,
            })
            .collect();
        let ops: Vec<i16> = writes
            .iter()
            .map(|w| match w.op {
                Op::Put(_) => 0,
                Op::Delete => 1,
                Op::Check => 2,
            })
            .collect();
        let vals: Vec<&[u8]> = writes.iter().map(|w| if let Op::Put(v) = w.op { v } else { &[] }).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.conn().await?;
            let sent = bounded(QUERY_TIMEOUT, async {
                Ok(conn.client.execute(&conn.stmts.apply, &[&keys, &expects, &ops, &vals]).await)
            })
            .await;
            let e = match sent {
                Ok(Ok(_)) => return Ok(()),
                // The database did not answer in time: the batch may commit yet.
                Err(timeout) => return Err(timeout),
                Ok(Err(e)) => e,
            };
            let Some(db) = e.as_db_error() else {
                // The connection failed with the batch in flight: unknown outcome.
                return Err(unavailable("database write outcome unknown", e));
            };
            let code = db.code().code();
            if code == CONFLICT {
                let index = db.message().parse().map_err(|_| unavailable("bad conflict report", db.message()))?;
                return Err(StoreError::Conflict { index });
            }
            if RETRYABLE.contains(&code) && attempt < ATTEMPTS {
                continue;
            }
            let cause = if code == "57014" || code == "55P03" { Cause::Timeout } else { Cause::Unavailable };
            return Err(StoreError::Io(cause, format!("database write failed: {e}")));
        }
    }

    /// PostgreSQL made every acknowledged batch durable at its commit.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A database that is down is answered per request (503), not by
    /// refusing writes for good.
    fn writable(&self) -> bool {
        true
    }

    fn release_thread(&self) {
        let mine = SHARDS.with(|s| {
            let mut shards = s.borrow_mut();
            let at = shards.iter().position(|(id, _)| *id == self.id)?;
            Some(shards.swap_remove(at).1)
        });
        // Dropped here, on the executor: its drivers are cancelled.
        drop(mine);
    }
}

#[cfg(test)]
mod tests;
