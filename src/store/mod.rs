//! The catalog's storage interface and its embedded implementation on sled.
//!
//! The catalog sees an ordered map of byte keys to versioned values, with
//! compare-and-swap on versions, atomic multi-key writes, and ordered prefix
//! scans with a continuation key. That is all a PostgreSQL table
//! `(key bytea primary key, version bigint, value bytea)` needs to offer too,
//! so another backend slots in behind the same trait.

mod cache;
mod durability;
mod freeze;
pub mod keys;
mod keyspace;
pub mod pg;
mod sled_files;
mod sled_store;
mod sled_values;
mod timer;

pub use keyspace::{guard_default, Keyspace};
pub use pg::PgStore;
pub use sled_store::SledStore;

use std::fmt;

use crate::disk::Cause;

/// A value with its version; versions start at 1 and grow by one per write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<V> {
    pub version: u64,
    pub value: V,
}

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
    /// The key must exist, at any version.
    Present,
    /// No precondition.
    Any,
}

/// What a write does once its expectation holds.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    Put(&'a [u8]),
    Delete,
    /// Only check the expectation (e.g. "the parent namespace still exists").
    Check,
}

/// One write of an atomic batch.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub key: &'a [u8],
    pub expect: Expect,
    pub op: Op<'a>,
}

impl<'a> Write<'a> {
    pub fn put(key: &'a [u8], expect: Expect, value: &'a [u8]) -> Write<'a> {
        Write { key, expect, op: Op::Put(value) }
    }

    pub fn delete(key: &'a [u8], expect: Expect) -> Write<'a> {
        Write { key, expect, op: Op::Delete }
    }

    pub fn check(key: &'a [u8], expect: Expect) -> Write<'a> {
        Write { key, expect, op: Op::Check }
    }
}

/// Why every write is refused once a sync failed (see `Store::writable`).
pub const WRITES_REFUSED: &str = "writes are refused since a sync of the store failed; restart the server";

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The precondition of write number `index` of the batch did not hold;
    /// nothing was written.
    Conflict { index: usize },
    /// The store failed (why, and the backend's words for the log); the
    /// outcome of a write is unknown.
    Io(Cause, String),
}

impl StoreError {
    /// Why the store failed; `None` for a conflict.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            StoreError::Conflict { .. } => None,
            StoreError::Io(cause, _) => Some(*cause),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict { index } => write!(f, "precondition failed on write {index}"),
            StoreError::Io(_, e) => write!(f, "store failure: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The catalog's storage.
///
/// Methods are `async` so a networked backend can await its server; the sled
/// backend answers reads at once and awaits only group-commit durability.
#[allow(async_fn_in_trait)] // Futures stay on their shard: no Send bound wanted.
pub trait Store: 'static {
    /// Bytes of a stored value, cheap to hold (sled: a reference-counted slice).
    type Value: AsRef<[u8]> + Clone;

    /// Reads one key.
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned<Self::Value>>, StoreError>;

    /// Visits keys starting with `prefix`, strictly after `after` when given,
    /// in key order, until `visit` returns false.
    async fn scan<F>(&self, prefix: &[u8], after: Option<&[u8]>, visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8], Versioned<&[u8]>) -> bool;

    /// [`scan`](Self::scan) for a caller that needs only the keys (listings,
    /// "is it empty"): a backend may skip reading values (sled: a big value
    /// kept out of line is not read from its file).
    async fn scan_keys<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8]) -> bool,
    {
        self.scan(prefix, after, |k, _| visit(k)).await
    }

    /// Applies every write or none; returns once the batch is durable.
    async fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError>;

    /// Makes everything written so far durable (for shutdown).
    fn sync(&self) -> Result<(), StoreError>;

    /// False once the store failed to make a write durable: the outcome of
    /// that write is unknown, so every later write is refused (503) until a
    /// restart replays what is on disk, as PostgreSQL does after a failed
    /// fsync.
    fn writable(&self) -> bool;

    /// The calling thread's executor is about to end: let go of what the
    /// store keeps for it (PostgreSQL: its connections).
    fn release_thread(&self) {}

    /// The embedded store, which `bingsan backup` snapshots through the
    /// admin socket; `None` for PostgreSQL, which its own tools back up.
    fn embedded(&self) -> Option<&SledStore> {
        None
    }
}
