use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one pool on one shard.
///
/// Written only by the owning shard thread (load + store, no read-modify-write
/// bus lock), read by the metrics thread.
#[derive(Default, Debug)]
pub struct PoolStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub returns: AtomicU64,
    pub discards: AtomicU64,
    pub retained_bytes: AtomicU64,
    pub retained_count: AtomicU64,
}

/// Adds `n` to a single-writer counter.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Sets a single-writer gauge.
#[inline]
pub(crate) fn set(gauge: &AtomicU64, v: u64) {
    gauge.store(v, Relaxed);
}

impl PoolStats {
    /// A consistent-enough copy for reports and tests.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            returns: self.returns.load(Relaxed),
            discards: self.discards.load(Relaxed),
            retained_bytes: self.retained_bytes.load(Relaxed),
            retained_count: self.retained_count.load(Relaxed),
        }
    }
}

/// Plain values of [`PoolStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub returns: u64,
    pub discards: u64,
    pub retained_bytes: u64,
    pub retained_count: u64,
}
