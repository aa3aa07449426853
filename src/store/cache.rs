//! A per-shard read cache over the shared sled store, validated by epochs.
//!
//! sled hands out a fresh heap copy for every value it returns; a shard
//! caches those copies (reference-counted, so a hit is a refcount bump, not
//! an allocation). Validity comes from epoch slots shared by all shards: a
//! writer bumps the slot of every key it wrote, and of that key's listing
//! prefix, after the write is applied and before it is acknowledged. A
//! reader takes the slot's epoch before reading sled and serves a cached
//! entry only while the epoch is unchanged, so an acknowledged write is
//! visible on every shard at once. Readers do one atomic load: no locks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::IVec;

const SLOTS: usize = 4096;

/// Epoch slots shared by all shards of one store.
pub struct Epochs {
    slots: Box<[AtomicU64]>,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

fn slot_of(key: &[u8]) -> usize {
    // FNV-1a: cheap, deterministic across threads.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % SLOTS
}

impl Epochs {
    pub fn read(&self, key: &[u8]) -> u64 {
        self.slots[slot_of(key)].load(Ordering::Acquire)
    }

    pub fn bump(&self, key: &[u8]) {
        self.slots[slot_of(key)].fetch_add(1, Ordering::AcqRel);
    }
}

/// What a shard remembers for one store.
#[derive(Default)]
pub struct ShardCache {
    gets: HashMap<Box<[u8]>, (u64, Option<IVec>)>,
    scans: HashMap<Box<[u8]>, ScanEntry>,
    bytes: usize,
    /// Where scan keys are built, so a lookup allocates nothing.
    scratch: Vec<u8>,
}

/// The items a scan visited, in order.
pub struct ScanEntry {
    pub epoch: u64,
    pub items: Vec<(IVec, IVec)>,
    /// The scan ran past the last matching key (nothing more to find).
    pub complete: bool,
}

/// Bytes a shard may hold in its cache before it starts over.
const BUDGET: usize = 64 << 20;

impl ShardCache {
    pub fn get(&self, key: &[u8], epoch: u64) -> Option<Option<IVec>> {
        match self.gets.get(key) {
            Some((e, v)) if *e == epoch => Some(v.clone()),
            _ => None,
        }
    }

    pub fn put(&mut self, key: &[u8], epoch: u64, value: Option<IVec>) {
        self.charge(key.len() + value.as_ref().map_or(0, |v| v.len()));
        self.gets.insert(key.into(), (epoch, value));
    }

    /// The cached scan for `(prefix, after)`, if still valid.
    pub fn scan(&mut self, prefix: &[u8], after: Option<&[u8]>, epoch: u64) -> Option<&ScanEntry> {
        scan_key(prefix, after, &mut self.scratch);
        self.scans.get(self.scratch.as_slice()).filter(|e| e.epoch == epoch)
    }

    pub fn put_scan(&mut self, prefix: &[u8], after: Option<&[u8]>, entry: ScanEntry) {
        let size: usize = entry.items.iter().map(|(k, v)| k.len() + v.len()).sum();
        scan_key(prefix, after, &mut self.scratch);
        let key: Box<[u8]> = self.scratch.as_slice().into();
        self.charge(key.len() + size);
        self.scans.insert(key, entry);
    }

    /// Keeps memory bounded: past the budget, forget everything.
    fn charge(&mut self, bytes: usize) {
        self.bytes += bytes;
        if self.bytes > BUDGET {
            self.gets.clear();
            self.scans.clear();
            self.bytes = bytes;
        }
    }
}

thread_local! {
    /// Caches of this thread, by store id (a process usually has one store).
    static CACHES: RefCell<Vec<(u64, ShardCache)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's cache for store `id`.
pub fn with_cache<R>(id: u64, f: impl FnOnce(&mut ShardCache) -> R) -> R {
    CACHES.with(|c| {
        let mut caches = c.borrow_mut();
        let at = match caches.iter().position(|(i, _)| *i == id) {
            Some(at) => at,
            None => {
                caches.push((id, ShardCache::default()));
                caches.len() - 1
            }
        };
        f(&mut caches[at].1)
    })
}

/// The cache key of a scan: prefix, `after`, then the prefix length and
/// whether `after` was given, so different splits never collide.
fn scan_key(prefix: &[u8], after: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(prefix);
    out.extend_from_slice(after.unwrap_or(&[]));
    out.extend_from_slice(&(prefix.len() as u32).to_le_bytes());
    out.push(after.is_some() as u8);
}
