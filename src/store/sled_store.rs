//! The embedded store: one sled tree, values prefixed with their version;
//! a value over a slice kept in a file of its own (`sled_values.rs`).

use std::cell::RefCell;
use std::ops::Bound;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Tree};

use std::sync::atomic::{AtomicU64, Ordering};

use super::cache::{with_cache, Epochs, ScanEntry};
use super::durability::GroupCommit;
use super::freeze::Freeze;
use super::sled_files::{discard_incomplete_snapshots, SledFiles};
use super::sled_values::{Pointer, ValueFiles, FLAG, OUT_OF_LINE};
use super::timer::Timer;
use super::{keys, Expect, Op, Store, StoreError, Versioned, Write, WRITES_REFUSED};
use crate::disk::Cause;
use crate::metrics::StoreOp;

const VERSION_LEN: usize = 8;

/// A sled database shared by all shards (sled is internally concurrent).
pub struct SledStore {
    tree: Tree,
    group: GroupCommit,
    /// Identifies this store's entries in the shards' caches.
    id: u64,
    epochs: Epochs,
    /// Pauses writers while `snapshot` collects the keys.
    freeze: Freeze,
    values: ValueFiles,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A stored value without its version header; cloning shares the bytes.
#[derive(Clone, Debug)]
pub struct SledValue(IVec);

impl AsRef<[u8]> for SledValue {
    fn as_ref(&self) -> &[u8] {
        &self.0[VERSION_LEN..]
    }
}

/// The version and the stored bytes after it (an out-of-line value's
/// pointer: see [`pointer_of`]).
fn split(raw: &[u8]) -> Versioned<&[u8]> {
    assert!(raw.len() >= VERSION_LEN, "stored value shorter than its version header");
    let (v, value) = raw.split_at(VERSION_LEN);
    Versioned { version: u64::from_le_bytes(v.try_into().expect("8 bytes")) & !FLAG, value }
}

fn is_out_of_line(raw: &[u8]) -> bool {
    raw.len() >= VERSION_LEN && raw[VERSION_LEN - 1] & 0x80 != 0
}

/// Where the value is when it is kept out of line; `Ok(None)`: inline.
fn pointer_of(raw: &[u8]) -> Result<Option<Pointer>, StoreError> {
    if !is_out_of_line(raw) {
        return Ok(None);
    }
    let pointer = Pointer::decode(&raw[VERSION_LEN..]);
    pointer.map(Some).ok_or_else(|| StoreError::Io(Cause::Io, "a stored out-of-line pointer is corrupt".into()))
}

/// The stored bytes of `value` at `version`: the value itself, or the
/// pointer to the file it was written to.
fn encode(version: u64, value: &[u8], out: Option<Pointer>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(VERSION_LEN + value.len().min(OUT_OF_LINE));
    match out {
        None => {
            raw.extend_from_slice(&version.to_le_bytes());
            raw.extend_from_slice(value);
        }
        Some(p) => {
            raw.extend_from_slice(&(version | FLAG).to_le_bytes());
            p.encode(&mut raw);
        }
    }
    raw
}

/// The file of an out-of-line value that a write replaces or deletes.
fn replaced_file(raw: Option<&[u8]>, op: Op<'_>) -> Option<u64> {
    let raw = raw.filter(|_| !matches!(op, Op::Check))?;
    pointer_of(raw).ok().flatten().map(|p| p.id)
}

/// Whether a key at `current` version (`None`: absent) meets `expect`.
fn holds(expect: Expect, current: Option<u64>) -> bool {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
        (Expect::Version(want), Some(have)) => want == have,
        _ => false,
    }
}

/// The bytes a batch puts.
fn put_bytes(writes: &[Write<'_>]) -> usize {
    writes.iter().map(|w| if let Op::Put(v) = w.op { v.len() } else { 0 }).sum()
}

/// Applies `writes` in one sled transaction, if every expectation holds;
/// a put with a pointer in `out` (same index) stores that pointer. Returns
/// the files of out-of-line values the batch replaced or deleted.
fn transact(tree: &Tree, writes: &[Write<'_>], out: &[Option<Pointer>]) -> Result<Vec<u64>, TransactionError<usize>> {
    let replaced = RefCell::new(Vec::new());
    tree.transaction(|tx| {
        replaced.borrow_mut().clear();
        for (index, w) in writes.iter().enumerate() {
            let raw = tx.get(w.key)?;
            let current = raw.as_ref().map(|raw| split(raw).version);
            if !holds(w.expect, current) {
                return Err(ConflictableTransactionError::Abort(index));
            }
            replaced.borrow_mut().extend(replaced_file(raw.as_deref(), w.op));
            match w.op {
                Op::Put(value) => {
                    let pointer = out.get(index).copied().flatten();
                    tx.insert(w.key, encode(current.unwrap_or(0) + 1, value, pointer))?;
                }
                Op::Delete => {
                    tx.remove(w.key)?;
                }
                Op::Check => {}
            }
        }
        Ok(())
    })?;
    Ok(replaced.into_inner())
}

/// A store failure from a sled transaction's outcome.
fn transaction_failure(e: TransactionError<usize>) -> StoreError {
    match e {
        TransactionError::Abort(index) => StoreError::Conflict { index },
        TransactionError::Storage(e) => io(e),
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(Cause::of_sled(&e), e.to_string())
}

/// A failure of our own work on sled's files: every path is the store's,
/// so any failure is the disk's.
fn file_io(e: std::io::Error) -> StoreError {
    StoreError::Io(Cause::of(&e).unwrap_or(Cause::Io), e.to_string())
}

impl SledStore {
    /// A batch of one put (a commit's swap, a create): a compare-and-swap
    /// of the stored bytes, which serializes with transactions (sled's
    /// concurrency control) without a transaction's overlay and its dozen
    /// allocations. Versions only grow, so unchanged bytes are the version
    /// that was checked; bytes changed since the read are read again.
    /// Returns the file of the out-of-line value it replaced, if any.
    fn put_one(&self, key: &[u8], expect: Expect, value: &[u8]) -> Result<Option<u64>, TransactionError<usize>> {
        loop {
            let current = self.tree.get(key)?;
            let version = current.as_ref().map(|raw| split(raw).version);
            if !holds(expect, version) {
                return Err(TransactionError::Abort(0));
            }
            let replaced = replaced_file(current.as_deref(), Op::Put(value));
            let new = encode(version.unwrap_or(0) + 1, value, None);
            if self.tree.compare_and_swap(key, current, Some(new))?.is_ok() {
                return Ok(replaced);
            }
        }
    }

    /// Opens (or creates) the store in `dir`. An open that fails leaves no
    /// incomplete snapshot behind to break the next one.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        discard_incomplete_snapshots(dir).map_err(file_io)?;
        // No periodic flush thread: its fsync of the log could make a record
        // durable before the blob it points to, so only our group commit
        // (the blobs first, then the log that points to them) syncs.
        let opened = sled::Config::new().path(dir).flush_every_ms(None).open();
        let db = opened.map_err(|e| {
            // What the failed open left (a full disk) must not block the next one.
            let _ = discard_incomplete_snapshots(dir);
            io(e)
        })?;
        let tree = db.open_tree("catalog").map_err(io)?;
        let values = ValueFiles::open(dir).map_err(file_io)?;
        let swept = values.sweep(&tree, |raw| pointer_of(raw).ok().flatten()).map_err(file_io)?;
        if swept > 0 {
            tracing::info!(swept, "removed out-of-line value files no record names (a crash's leftovers)");
        }
        let mut files = SledFiles::open(dir).map_err(file_io)?;
        // sled's flush writes the log but syncs it with sync_file_range
        // only; `files` makes what it wrote durable.
        let group = GroupCommit::start(Box::new(move || {
            db.flush().map_err(|e| e.to_string())?;
            files.sync().map_err(|e| format!("sync failed: {e}"))
        }));
        Ok(SledStore {
            tree,
            group,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            epochs: Epochs::default(),
            freeze: Freeze::default(),
            values,
        })
    }

    /// Every key with its stored bytes (version header included), as of one
    /// instant between batches: each batch is wholly in or wholly out, and
    /// every batch acknowledged before the call is in. Writers wait
    /// (asynchronously) only while the keys are collected, which clones
    /// reference-counted values and reads out-of-line values from their
    /// files (no writer can replace one meanwhile). Call it off the shards.
    pub fn snapshot(&self) -> Result<Vec<(IVec, IVec)>, StoreError> {
        let collect = || {
            let mut entries = self.tree.iter().collect::<Result<Vec<_>, _>>().map_err(io)?;
            for (key, raw) in &mut entries {
                if let Some(p) = pointer_of(raw)? {
                    *raw = IVec::from(self.values.read(key, split(raw).version, p).map_err(file_io)?);
                }
            }
            Ok(entries)
        };
        self.freeze.while_frozen(collect).map_err(|e| StoreError::Io(Cause::Timeout, e))?
    }

    /// Writes entries of a [`snapshot`](Self::snapshot) into this store,
    /// which must be empty, and makes them durable (restore).
    pub fn load(&self, entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize, StoreError> {
        if !self.tree.is_empty() {
            return Err(StoreError::Io(Cause::Io, "the store to restore into is not empty".into()));
        }
        let mut count = 0;
        for (key, raw) in entries {
            if raw.len() < VERSION_LEN {
                return Err(StoreError::Io(Cause::Io, "a backed-up value has no version header".into()));
            }
            self.tree.insert(key, raw).map_err(io)?;
            count += 1;
        }
        self.sync()?;
        Ok(count)
    }
}

impl SledStore {
    /// Visits sled's keys under `prefix` after `after`; returns whether the
    /// scan ran out of keys (rather than being stopped by `visit`).
    fn scan_sled(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut visit: impl FnMut(&IVec, &IVec) -> bool,
    ) -> Result<bool, StoreError> {
        let lower = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        for item in self.tree.range::<&[u8], _>((lower, Bound::Unbounded)) {
            let (key, raw) = item.map_err(io)?;
            if !key.starts_with(prefix) {
                return Ok(true);
            }
            if !visit(&key, &raw) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl SledStore {
    /// A batch that puts more than a slice, on the shard's background thread:
    /// each value over a slice is written to a file of its own (`sled_values`,
    /// a slice per `write`, synced), outside the writer pause; then the
    /// transaction stores pointers to them. The shard only copies the batch
    /// over, a slice at a time. Files of a batch that did not apply are
    /// removed.
    async fn apply_off_shard(&self, writes: &[Write<'_>]) -> Result<Vec<u64>, StoreError> {
        // (key, expectation, value to put, whether a delete)
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            let value = match w.op {
                Op::Put(v) => Some(crate::bulk::to_vec(v).await),
                _ => None,
            };
            ops.push((w.key.to_vec(), w.expect, value, matches!(w.op, Op::Delete)));
        }
        let values = self.values.clone();
        let (ops, out) = crate::background::run(move || {
            let mut out = Vec::with_capacity(ops.len());
            let written = (|| {
                for (key, _, value, _) in &ops {
                    let big = value.as_deref().filter(|v| v.len() > OUT_OF_LINE);
                    out.push(big.map(|v| values.write(key, v)).transpose()?);
                }
                values.sync_dir()
            })();
            let ids: Vec<u64> = out.iter().flatten().map(|p: &Pointer| p.id).collect();
            match written {
                Ok(()) => Ok((ops, out)),
                Err(e) => {
                    values.remove(&ids);
                    Err(file_io(e))
                }
            }
        })
        .await?;
        let (tree, values) = (self.tree.clone(), self.values.clone());
        let _applying = self.freeze.enter().await;
        crate::background::run(move || {
            let writes: Vec<Write<'_>> = ops
                .iter()
                .map(|(key, expect, value, delete)| match (value, delete) {
                    (Some(v), _) => Write::put(key, *expect, v),
                    (None, true) => Write::delete(key, *expect),
                    (None, false) => Write::check(key, *expect),
                })
                .collect();
            let applied = transact(&tree, &writes, &out).map_err(transaction_failure);
            if applied.is_err() {
                values.remove(&out.iter().flatten().map(|p| p.id).collect::<Vec<_>>());
            }
            applied
        })
        .await
    }

    /// The stored bytes of `key` as an inline value: `raw` itself, or the
    /// value its pointer names, read on the background thread. A file removed
    /// meanwhile means the value was replaced: it is read again from sled.
    async fn resolve(&self, key: &[u8], mut raw: Option<IVec>) -> Result<Option<IVec>, StoreError> {
        for _ in 0..RESOLVE_ATTEMPTS {
            let Some(pointer) = raw.as_deref().map(pointer_of).transpose()?.flatten() else { return Ok(raw) };
            let version = split(raw.as_deref().expect("a pointer is stored bytes")).version;
            let (values, owned_key) = (self.values.clone(), key.to_vec());
            // The copy into an `IVec` too: megabytes.
            let read = crate::background::run(move || values.read(&owned_key, version, pointer).map(IVec::from)).await;
            match read {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => raw = self.tree.get(key).map_err(io)?,
                Err(e) => return Err(file_io(e)),
            }
        }
        Err(StoreError::Io(Cause::Io, "an out-of-line value kept being replaced while it was read".into()))
    }

    /// Visits keys and stored bytes under `prefix` after `after`, from this
    /// shard's cache when valid (out-of-line values as their pointers).
    fn scan_raw(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut visit: impl FnMut(&IVec, &IVec) -> bool,
    ) -> Result<(), StoreError> {
        let epoch = self.epochs.read(prefix);
        let replay = with_cache(self.id, |c| {
            let entry = c.scan(prefix, after, epoch)?;
            for (k, v) in &entry.items {
                if !visit(k, v) {
                    return Some(None);
                }
            }
            Some(if entry.complete { None } else { entry.items.last().map(|(k, _)| k.clone()) })
        });
        match replay {
            // Served from the cache.
            Some(None) => return Ok(()),
            // The visitor wants more than was cached: go on in sled.
            Some(Some(last)) => {
                self.scan_sled(prefix, Some(&last), visit)?;
                return Ok(());
            }
            None => {}
        }
        let mut items = Vec::new();
        let complete = self.scan_sled(prefix, after, |k, v| {
            items.push((k.clone(), v.clone()));
            visit(k, v)
        })?;
        with_cache(self.id, |c| c.put_scan(prefix, after, ScanEntry { epoch, items, complete }));
        Ok(())
    }
}

/// Reads of a value whose file keeps being replaced before give up.
const RESOLVE_ATTEMPTS: usize = 16;

/// A scan visitor that stops at an out-of-line value, leaving it in
/// `pending` to be read (asynchronously) before the scan goes on.
fn inline_or_stop<'v>(
    visit: &'v mut impl FnMut(&[u8], Versioned<&[u8]>) -> bool,
    pending: &'v mut Option<(IVec, IVec)>,
) -> impl FnMut(&IVec, &IVec) -> bool + 'v {
    move |k, raw| {
        if is_out_of_line(raw) {
            *pending = Some((k.clone(), raw.clone()));
            return false;
        }
        visit(k, split(raw))
    }
}

impl Store for SledStore {
    type Value = SledValue;

    fn embedded(&self) -> Option<&SledStore> {
        Some(self)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Versioned<SledValue>>, StoreError> {
        let _timer = Timer::start(StoreOp::Get);
        // The epoch is read before sled, so a write landing in between
        // leaves this fill already stale.
        let epoch = self.epochs.read(key);
        let raw = match with_cache(self.id, |c| c.get(key, epoch)) {
            Some(hit) => hit,
            None => {
                let mut raw = self.tree.get(key).map_err(io)?;
                if raw.as_deref().is_some_and(is_out_of_line) {
                    raw = self.resolve(key, raw).await?;
                }
                with_cache(self.id, |c| c.put(key, epoch, raw.clone()));
                raw
            }
        };
        Ok(raw.map(|raw| Versioned { version: split(&raw).version, value: SledValue(raw) }))
    }

    async fn scan<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8], Versioned<&[u8]>) -> bool,
    {
        let _timer = Timer::start(StoreOp::Scan);
        let mut pending = None;
        self.scan_raw(prefix, after, inline_or_stop(&mut visit, &mut pending))?;
        while let Some((key, raw)) = pending.take() {
            if let Some(value) = self.resolve(&key, Some(raw)).await? {
                if !visit(&key, split(&value)) {
                    return Ok(());
                }
            }
            self.scan_sled(prefix, Some(&key), inline_or_stop(&mut visit, &mut pending))?;
        }
        Ok(())
    }

    async fn scan_keys<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8]) -> bool,
    {
        let _timer = Timer::start(StoreOp::Scan);
        self.scan_raw(prefix, after, |k, _| visit(k))
    }

    async fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let _timer = Timer::start(StoreOp::Apply);
        if !self.writable() {
            return Err(StoreError::Io(Cause::Io, WRITES_REFUSED.into()));
        }
        let replaced = if put_bytes(writes) > crate::bulk::SLICE {
            self.apply_off_shard(writes).await?
        } else {
            let _applying = self.freeze.enter().await;
            match writes {
                [Write { key, expect, op: Op::Put(value) }] => {
                    self.put_one(key, *expect, value).map(|id| id.into_iter().collect())
                }
                _ => transact(&self.tree, writes, &[]),
            }
            .map_err(transaction_failure)?
        };
        // Before the acknowledgement: no shard may serve the old value.
        for w in writes.iter().filter(|w| !matches!(w.op, Op::Check)) {
            self.epochs.bump(w.key);
            keys::scanned_prefixes(w.key).for_each(|p| self.epochs.bump(p));
        }
        self.group.durable().await.map_err(|e| StoreError::Io(Cause::Io, e))?;
        // Only now: until the batch is durable, a crash would bring back
        // the pointers to these files. Off the shard: unlinking megabytes
        // takes the file system milliseconds.
        if !replaced.is_empty() {
            let values = self.values.clone();
            crate::background::run(move || values.remove(&replaced)).await;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        futures_lite::future::block_on(self.group.durable()).map_err(|e| StoreError::Io(Cause::Io, e))
    }

    fn writable(&self) -> bool {
        !self.group.failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn store() -> (SledStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("bingsan-store-{}", uuid::Uuid::new_v4()));
        (SledStore::open(&dir).unwrap(), dir)
    }

    /// Opens `dir` again once the dropped store let go of it: sled's
    /// background threads release the directory lock a moment after the
    /// drop (bounded wait).
    fn reopen(dir: &Path) -> SledStore {
        for _ in 0..500 {
            match SledStore::open(dir) {
                Ok(s) => return s,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the dropped store never released its lock");
    }

    fn put<'a>(key: &'a [u8], expect: Expect, value: &'a [u8]) -> Write<'a> {
        Write::put(key, expect, value)
    }

    #[test]
    fn versions_and_compare_and_swap() {
        let (s, dir) = store();
        block_on(async {
            s.apply(&[put(b"k", Expect::Absent, b"one")]).await.unwrap();
            let v = s.get(b"k").await.unwrap().unwrap();
            assert_eq!((v.version, v.value.as_ref()), (1, &b"one"[..]));
            assert_eq!(s.apply(&[put(b"k", Expect::Absent, b"x")]).await, Err(StoreError::Conflict { index: 0 }));
            assert_eq!(s.apply(&[put(b"k", Expect::Version(7), b"x")]).await, Err(StoreError::Conflict { index: 0 }));
            s.apply(&[put(b"k", Expect::Version(1), b"two")]).await.unwrap();
            let v = s.get(b"k").await.unwrap().unwrap();
            assert_eq!((v.version, v.value.as_ref()), (2, &b"two"[..]));
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A batch putting more than a slice is applied on the background thread,
    /// with the same expectations, versions and all-or-nothing outcome.
    #[test]
    fn big_batches_apply_off_the_shard_alike() {
        let (s, dir) = store();
        let s = glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let big: Vec<u8> = (0..2 * crate::bulk::SLICE + 3).map(|i| (i % 253) as u8).collect();
                s.apply(&[put(b"k", Expect::Absent, &big), put(b"n", Expect::Absent, b"1")]).await.unwrap();
                let v = s.get(b"k").await.unwrap().unwrap();
                assert_eq!((v.version, v.value.as_ref()), (1, &big[..]));
                let refused = [put(b"k", Expect::Version(1), b"x"), Write::check(b"n", Expect::Version(9))];
                let mut bigger = big.clone();
                bigger.push(7);
                let refused_big = [put(b"k", Expect::Version(1), &bigger), Write::check(b"n", Expect::Version(9))];
                assert_eq!(s.apply(&refused_big).await, Err(StoreError::Conflict { index: 1 }));
                assert_eq!(s.get(b"k").await.unwrap().unwrap().value.as_ref(), &big[..]);
                assert_eq!(s.apply(&refused).await, Err(StoreError::Conflict { index: 1 }));
                let swap = [put(b"k", Expect::Version(1), &bigger), Write::delete(b"n", Expect::Version(1))];
                s.apply(&swap).await.unwrap();
                let v = s.get(b"k").await.unwrap().unwrap();
                assert_eq!((v.version, v.value.as_ref()), (2, &bigger[..]));
                assert!(s.get(b"n").await.unwrap().is_none());
                s
            })
            .unwrap()
            .join()
            .unwrap();
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let (s, dir) = store();
        block_on(async {
            s.apply(&[put(b"b", Expect::Absent, b"1")]).await.unwrap();
            let batch = [put(b"a", Expect::Absent, b"1"), put(b"b", Expect::Absent, b"2")];
            assert_eq!(s.apply(&batch).await, Err(StoreError::Conflict { index: 1 }));
            assert!(s.get(b"a").await.unwrap().is_none());
            let checked = [Write::check(b"b", Expect::Version(1)), put(b"c", Expect::Absent, b"3")];
            s.apply(&checked).await.unwrap();
            assert_eq!(s.get(b"b").await.unwrap().unwrap().version, 1);
            let del = [Write::delete(b"b", Expect::Present)];
            s.apply(&del).await.unwrap();
            assert!(s.get(b"b").await.unwrap().is_none());
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn scan_is_ordered_bounded_and_resumable() {
        let (s, dir) = store();
        block_on(async {
            for k in [&b"p/c"[..], b"p/a", b"p/b", b"q/a", b"o/z"] {
                s.apply(&[put(k, Expect::Absent, b"")]).await.unwrap();
            }
            let mut seen = Vec::new();
            s.scan(b"p/", None, |k, _| {
                seen.push(k.to_vec());
                true
            })
            .await
            .unwrap();
            assert_eq!(seen, vec![b"p/a".to_vec(), b"p/b".to_vec(), b"p/c".to_vec()]);
            seen.clear();
            s.scan(b"p/", Some(b"p/a"), |k, _| {
                seen.push(k.to_vec());
                seen.is_empty()
            })
            .await
            .unwrap();
            assert_eq!(seen, vec![b"p/b".to_vec()]);
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn writes_on_one_thread_invalidate_other_threads_caches() {
        let (s, dir) = store();
        let s = std::sync::Arc::new(s);
        let a = bumpalo::Bump::new();
        let (k, l, top) = (keys::namespace(&a, &["k"]), keys::namespace(&a, &["l"]), keys::namespace_children(&a, &[]));
        block_on(s.apply(&[put(k, Expect::Absent, b"old")])).unwrap();
        let listed = |s: &SledStore| {
            let mut n = 0;
            block_on(s.scan(top, None, |_, _| {
                n += 1;
                true
            }))
            .unwrap();
            n
        };
        // Fill this thread's cache, twice to be sure it is served from it.
        for _ in 0..2 {
            assert_eq!(block_on(s.get(k)).unwrap().unwrap().value.as_ref(), b"old");
            assert_eq!(listed(&s), 1);
        }
        let (writer, k2, l2) = (s.clone(), k.to_vec(), l.to_vec());
        std::thread::spawn(move || {
            block_on(writer.apply(&[put(&k2, Expect::Version(1), b"new"), put(&l2, Expect::Absent, b"")])).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(block_on(s.get(k)).unwrap().unwrap().value.as_ref(), b"new");
        assert_eq!(listed(&s), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_incomplete_snapshot_does_not_break_the_next_open() {
        let (s, dir) = store();
        block_on(s.apply(&[put(b"k", Expect::Absent, b"v")])).unwrap();
        drop(s);
        // What an open on a full disk leaves: an empty snapshot in the making.
        let leftover = dir.join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&leftover, b"").unwrap();
        let s = reopen(&dir);
        assert_eq!(block_on(s.get(b"k")).unwrap().unwrap().value.as_ref(), b"v");
        assert!(!leftover.exists());
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn snapshots_hold_whole_batches_and_load_into_an_empty_store() {
        let (s, dir) = store();
        let s = std::sync::Arc::new(s);
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let (a, b) = (format!("a/{i:04}"), format!("b/{i:04}"));
                    block_on(
                        s.apply(&[put(a.as_bytes(), Expect::Absent, b"x"), put(b.as_bytes(), Expect::Absent, b"y")]),
                    )
                    .unwrap();
                }
            })
        };
        while !writer.is_finished() {
            let last = s.snapshot().unwrap();
            let count = |p: &[u8]| last.iter().filter(|(k, _)| k.starts_with(p)).count();
            assert_eq!(count(b"a/"), count(b"b/"), "a snapshot holds half a batch");
        }
        writer.join().unwrap();
        block_on(s.apply(&[put(b"a/0000", Expect::Version(1), b"z")])).unwrap();
        let last = s.snapshot().unwrap();
        assert_eq!(last.len(), 600);

        let (restored, dir2) = store();
        let entries = last.iter().map(|(k, v)| (k.to_vec(), v.to_vec()));
        assert_eq!(restored.load(entries.clone()).unwrap(), 600);
        let v = block_on(restored.get(b"a/0000")).unwrap().unwrap();
        assert_eq!((v.version, v.value.as_ref()), (2, &b"z"[..]));
        assert!(restored.load(entries).is_err(), "a load into a non-empty store must be refused");
        drop((s, restored));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }

    #[test]
    fn data_survives_reopen() {
        let (s, dir) = store();
        block_on(s.apply(&[put(b"k", Expect::Absent, b"v")])).unwrap();
        drop(s);
        let s = reopen(&dir);
        assert_eq!(block_on(s.get(b"k")).unwrap().unwrap().value.as_ref(), b"v");
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Runs `f` on a glommio executor (big values are copied with its timers, `bulk`).
    fn on_executor<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
        glommio::LocalExecutorBuilder::default().spawn(move || async move { f().await }).unwrap().join().unwrap()
    }

    fn value_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("values")).unwrap().count()
    }

    fn big(seed: u8) -> Vec<u8> {
        (0..OUT_OF_LINE + 1 + seed as usize).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// A value over a slice lives in a file of its own, sled holding only a
    /// pointer; the file goes once the value is replaced or deleted, and a
    /// batch that does not apply leaves none.
    #[test]
    fn big_values_live_in_files_of_their_own() {
        let (s, dir) = store();
        let d = dir.clone();
        let s = on_executor(async move || {
            s.apply(&[put(b"k", Expect::Absent, &big(1))]).await.unwrap();
            assert_eq!(s.tree.get(b"k").unwrap().unwrap().len(), VERSION_LEN + 20, "sled holds the pointer only");
            assert_eq!(value_files(&d), 1);
            let v = s.get(b"k").await.unwrap().unwrap();
            assert_eq!((v.version, v.value.as_ref()), (1, &big(1)[..]));
            assert_eq!(
                s.apply(&[put(b"k", Expect::Version(1), &big(2)), Write::check(b"n", Expect::Present)]).await,
                Err(StoreError::Conflict { index: 1 })
            );
            assert_eq!(value_files(&d), 1, "a batch that did not apply left its file");
            s.apply(&[put(b"k", Expect::Version(1), &big(2))]).await.unwrap();
            assert_eq!(value_files(&d), 1, "the replaced value's file stayed");
            let v = s.get(b"k").await.unwrap().unwrap();
            assert_eq!((v.version, v.value.as_ref()), (2, &big(2)[..]));
            s.apply(&[put(b"k", Expect::Version(2), b"small")]).await.unwrap();
            assert_eq!((value_files(&d), s.get(b"k").await.unwrap().unwrap().version), (0, 3));
            s.apply(&[put(b"k", Expect::Version(3), &big(3))]).await.unwrap();
            s.apply(&[Write::delete(b"k", Expect::Version(4))]).await.unwrap();
            assert_eq!(value_files(&d), 0);
            assert!(s.get(b"k").await.unwrap().is_none());
            s
        });
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Scans read out-of-line values in key order; key-only scans and
    /// backups see the same store; a reopen keeps the named files and
    /// removes one no pointer names (a batch a crash cut short).
    #[test]
    fn big_values_scan_back_up_and_survive_reopen() {
        let (s, dir) = store();
        let d = dir.clone();
        let s = on_executor(async move || {
            for (k, v) in [(&b"p/a"[..], big(1)), (b"p/b", b"small".to_vec()), (b"p/c", big(2))] {
                s.apply(&[put(k, Expect::Absent, &v)]).await.unwrap();
            }
            let mut seen = Vec::new();
            s.scan(b"p/", None, |k, v| {
                seen.push((k.to_vec(), v.value.to_vec()));
                true
            })
            .await
            .unwrap();
            let want = vec![(b"p/a".to_vec(), big(1)), (b"p/b".to_vec(), b"small".to_vec()), (b"p/c".to_vec(), big(2))];
            assert_eq!(seen, want);
            let mut keys = Vec::new();
            s.scan_keys(b"p/", Some(b"p/a"), |k| {
                keys.push(k.to_vec());
                true
            })
            .await
            .unwrap();
            assert_eq!(keys, [b"p/b".to_vec(), b"p/c".to_vec()]);
            let backed_up = s.snapshot().unwrap();
            assert_eq!(
                backed_up.iter().map(|(_, raw)| split(raw).value.to_vec()).collect::<Vec<_>>(),
                [big(1), b"small".to_vec(), big(2)]
            );
            s.values.write(b"p/a", &big(9)).unwrap();
            assert_eq!(value_files(&d), 3);
            s
        });
        drop(s);
        let s = reopen(&dir);
        assert_eq!(value_files(&dir), 2, "the file no pointer names was not swept");
        let s = on_executor(async move || {
            assert_eq!(s.get(b"p/c").await.unwrap().unwrap().value.as_ref(), &big(2)[..]);
            s
        });
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
