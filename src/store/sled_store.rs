//! The embedded store: one sled tree, values prefixed with their version.

use std::ops::Bound;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Tree};

use std::sync::atomic::{AtomicU64, Ordering};

use super::cache::{with_cache, Epochs, ScanEntry};
use super::durability::GroupCommit;
use super::freeze::Freeze;
use super::sled_files::{discard_incomplete_snapshots, SledFiles};
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

fn split(raw: &[u8]) -> Versioned<&[u8]> {
    assert!(raw.len() >= VERSION_LEN, "stored value shorter than its version header");
    let (v, value) = raw.split_at(VERSION_LEN);
    Versioned { version: u64::from_le_bytes(v.try_into().expect("8 bytes")), value }
}

fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(VERSION_LEN + value.len());
    raw.extend_from_slice(&version.to_le_bytes());
    raw.extend_from_slice(value);
    raw
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

/// Applies `writes` in one sled transaction, if every expectation holds.
fn transact(tree: &Tree, writes: &[Write<'_>]) -> Result<(), TransactionError<usize>> {
    tree.transaction(|tx| {
        for (index, w) in writes.iter().enumerate() {
            let current = tx.get(w.key)?.map(|raw| split(&raw).version);
            if !holds(w.expect, current) {
                return Err(ConflictableTransactionError::Abort(index));
            }
            match w.op {
                Op::Put(value) => {
                    tx.insert(w.key, encode(current.unwrap_or(0) + 1, value))?;
                }
                Op::Delete => {
                    tx.remove(w.key)?;
                }
                Op::Check => {}
            }
        }
        Ok(())
    })
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
    fn put_one(&self, key: &[u8], expect: Expect, value: &[u8]) -> Result<(), TransactionError<usize>> {
        loop {
            let current = self.tree.get(key)?;
            let version = current.as_ref().map(|raw| split(raw).version);
            if !holds(expect, version) {
                return Err(TransactionError::Abort(0));
            }
            let new = encode(version.unwrap_or(0) + 1, value);
            if self.tree.compare_and_swap(key, current, Some(new))?.is_ok() {
                return Ok(());
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
        })
    }

    /// Every key with its stored bytes (version header included), as of one
    /// instant between batches: each batch is wholly in or wholly out, and
    /// every batch acknowledged before the call is in. Writers wait
    /// (asynchronously) only while the keys are collected, which clones
    /// reference-counted values and copies nothing. Call it off the shards.
    pub fn snapshot(&self) -> Result<Vec<(IVec, IVec)>, StoreError> {
        self.freeze
            .while_frozen(|| self.tree.iter().collect::<Result<Vec<_>, _>>().map_err(io))
            .map_err(|e| StoreError::Io(Cause::Timeout, e))?
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
    /// [`transact`] on the shard's blocking thread, for a batch that puts
    /// more than a slice: sled copies each value twice more (into its
    /// transaction, then its log) and writes a big one to a blob file, tens
    /// of ms for a 10,000-snapshot table that would stall the shard. The
    /// shard only copies the batch over, a slice at a time.
    async fn apply_off_shard(&self, writes: &[Write<'_>]) -> Result<(), TransactionError<usize>> {
        // (key, expectation, value to put, whether a delete)
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            let value = match w.op {
                Op::Put(v) => Some(crate::bulk::to_vec(v).await),
                _ => None,
            };
            ops.push((w.key.to_vec(), w.expect, value, matches!(w.op, Op::Delete)));
        }
        let tree = self.tree.clone();
        let _applying = self.freeze.enter().await;
        glommio::executor()
            .spawn_blocking(move || {
                let writes: Vec<Write<'_>> = ops
                    .iter()
                    .map(|(key, expect, value, delete)| match (value, delete) {
                        (Some(v), _) => Write::put(key, *expect, v),
                        (None, true) => Write::delete(key, *expect),
                        (None, false) => Write::check(key, *expect),
                    })
                    .collect();
                transact(&tree, &writes)
            })
            .await
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
                let raw = self.tree.get(key).map_err(io)?;
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
        let epoch = self.epochs.read(prefix);
        let replay = with_cache(self.id, |c| {
            let entry = c.scan(prefix, after, epoch)?;
            for (k, v) in &entry.items {
                if !visit(k, split(v)) {
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
                self.scan_sled(prefix, Some(&last), |k, v| visit(k, split(v)))?;
                return Ok(());
            }
            None => {}
        }
        let mut items = Vec::new();
        let complete = self.scan_sled(prefix, after, |k, v| {
            items.push((k.clone(), v.clone()));
            visit(k, split(v))
        })?;
        with_cache(self.id, |c| c.put_scan(prefix, after, ScanEntry { epoch, items, complete }));
        Ok(())
    }

    async fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let _timer = Timer::start(StoreOp::Apply);
        if !self.writable() {
            return Err(StoreError::Io(Cause::Io, WRITES_REFUSED.into()));
        }
        let outcome = if put_bytes(writes) > crate::bulk::SLICE {
            self.apply_off_shard(writes).await
        } else {
            let _applying = self.freeze.enter().await;
            match writes {
                [Write { key, expect, op: Op::Put(value) }] => self.put_one(key, *expect, value),
                _ => transact(&self.tree, writes),
            }
        };
        match outcome {
            Ok(()) => {
                // Before the acknowledgement: no shard may serve the old value.
                for w in writes.iter().filter(|w| !matches!(w.op, Op::Check)) {
                    self.epochs.bump(w.key);
                    keys::scanned_prefixes(w.key).for_each(|p| self.epochs.bump(p));
                }
                self.group.durable().await.map_err(|e| StoreError::Io(Cause::Io, e))
            }
            Err(TransactionError::Abort(index)) => Err(StoreError::Conflict { index }),
            Err(TransactionError::Storage(e)) => Err(io(e)),
        }
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

    /// A batch putting more than a slice is applied on the blocking thread,
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
}
