use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;

use super::stats::{bump, set};
use super::PoolStats;

/// A shard's free list of byte buffers.
pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    retained_bytes: std::cell::Cell<usize>,
    initial: usize,
    max: usize,
    keep: usize,
    /// Most bytes of capacity kept idle in all: `keep × initial`.
    budget: usize,
    stats: Arc<PoolStats>,
}

impl BufPool {
    /// A pool that hands out buffers of `initial` bytes and keeps at most
    /// `keep` of them, holding at most `keep × initial` bytes idle in all:
    /// a buffer that grew is kept as it is while the total stays within
    /// that, else shrunk back to `initial` first (one reallocation, so the
    /// free list stays stocked through bursts of large answers); one that
    /// grew past `max` is never kept.
    pub fn new(initial: usize, max: usize, keep: usize, stats: Arc<PoolStats>) -> Rc<BufPool> {
        assert!(initial > 0 && initial <= max, "buffer sizes: 0 < initial <= max");
        Rc::new(BufPool {
            free: RefCell::new(Vec::with_capacity(keep)),
            retained_bytes: std::cell::Cell::new(0),
            initial,
            max,
            keep,
            budget: keep.saturating_mul(initial),
            stats,
        })
    }

    /// Takes a cleared buffer: a kept one (hit) or a new one (miss).
    pub fn get(self: &Rc<Self>) -> PooledBuf {
        PooledBuf { buf: self.take(), pool: Some(self.clone()), pending: false }
    }

    /// A buffer taken from the pool only when first written to (mutably
    /// dereferenced): a response whose handler waits (for durability)
    /// before it writes its answer holds no pooled buffer meanwhile.
    pub fn get_on_write(self: &Rc<Self>) -> PooledBuf {
        PooledBuf { buf: Vec::new(), pool: Some(self.clone()), pending: true }
    }

    fn take(&self) -> Vec<u8> {
        let popped = self.free.borrow_mut().pop();
        let buf = match popped {
            Some(buf) => {
                bump(&self.stats.hits, 1);
                self.retained_bytes.set(self.retained_bytes.get() - buf.capacity());
                self.publish_retained();
                buf
            }
            None => {
                bump(&self.stats.misses, 1);
                Vec::with_capacity(self.initial)
            }
        };
        debug_assert!(buf.is_empty());
        buf
    }

    fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() > self.max || free.len() >= self.keep {
            bump(&self.stats.discards, 1);
            return;
        }
        buf.clear();
        if self.retained_bytes.get() + buf.capacity() > self.budget {
            buf.shrink_to(self.initial);
        }
        let mut retained = self.retained_bytes.get() + buf.capacity();
        if retained > self.budget {
            // Kept buffers that grew fill the budget: free the largest, so
            // the pool keeps many buffers (what hits need) over big ones.
            let largest = (0..free.len()).max_by_key(|&i| free[i].capacity());
            match largest {
                Some(i) if free[i].capacity() > buf.capacity() => {
                    retained -= free.swap_remove(i).capacity();
                    bump(&self.stats.discards, 1);
                }
                _ => {
                    bump(&self.stats.discards, 1);
                    return;
                }
            }
        }
        debug_assert!(retained <= self.budget, "buffer pool over its budget");
        bump(&self.stats.returns, 1);
        self.retained_bytes.set(retained);
        free.push(buf);
        drop(free);
        self.publish_retained();
    }

    fn publish_retained(&self) {
        set(&self.stats.retained_bytes, self.retained_bytes.get() as u64);
        set(&self.stats.retained_count, self.free.borrow().len() as u64);
    }

    /// This pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }
}

/// A buffer on loan from a [`BufPool`]; it goes back when dropped.
///
/// Owning the `Vec` makes a double return or a use after return impossible:
/// the buffer moves back into the pool exactly once, in `drop`.
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Option<Rc<BufPool>>,
    /// Not taken from `pool` yet ([`BufPool::get_on_write`]).
    pending: bool,
}

impl PooledBuf {
    /// A buffer that belongs to no pool (tests, one-off tools).
    pub fn unpooled(capacity: usize) -> PooledBuf {
        PooledBuf { buf: Vec::with_capacity(capacity), pool: None, pending: false }
    }

    /// Empties the buffer; one not taken yet stays so.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        if self.pending {
            self.pending = false;
            if let Some(pool) = &self.pool {
                self.buf = pool.take();
            }
        }
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().filter(|_| !self.pending) {
            pool.put(std::mem::take(&mut self.buf));
        }
    }
}

impl std::fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuf").field("len", &self.buf.len()).field("capacity", &self.buf.capacity()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(keep: usize) -> Rc<BufPool> {
        BufPool::new(16, 64, keep, Arc::default())
    }

    #[test]
    fn first_get_misses_then_hits() {
        let p = pool(4);
        drop(p.get());
        let b = p.get();
        assert_eq!(b.capacity(), 16);
        let s = p.stats().snapshot();
        assert_eq!((s.hits, s.misses, s.returns, s.discards), (1, 1, 1, 0));
        assert_eq!((s.retained_count, s.retained_bytes), (0, 0));
    }

    #[test]
    fn returned_buffer_is_cleared_and_counted() {
        let p = pool(4);
        let mut b = p.get();
        b.extend_from_slice(b"hello");
        drop(b);
        let s = p.stats().snapshot();
        assert_eq!((s.returns, s.retained_count, s.retained_bytes), (1, 1, 16));
        assert!(p.get().is_empty());
    }

    #[test]
    fn oversized_buffer_is_discarded() {
        let p = pool(4);
        let mut b = p.get();
        b.resize(65, 0);
        drop(b);
        let s = p.stats().snapshot();
        assert_eq!((s.returns, s.discards, s.retained_count), (0, 1, 0));
    }

    #[test]
    fn buffer_at_max_is_kept() {
        let p = pool(4);
        let mut b = p.get();
        b.reserve_exact(64);
        assert_eq!(b.capacity(), 64);
        drop(b);
        assert_eq!(p.stats().snapshot().returns, 1);
    }

    #[test]
    fn retained_count_is_capped() {
        let p = pool(2);
        let bufs: Vec<_> = (0..3).map(|_| p.get()).collect();
        drop(bufs);
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.returns, s.discards, s.retained_count, s.retained_bytes), (3, 2, 1, 2, 32));
    }

    #[test]
    fn grown_buffers_are_kept_within_the_byte_budget() {
        // Budget 4 × 16 = 64 bytes: a 40-byte and a 16-byte buffer fit
        // (56); one more 16-byte buffer would make 72, so the 40-byte one
        // is freed to make room for it.
        let p = pool(4);
        drop((p.get(), p.get(), p.get()));
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.returns, s.retained_count, s.retained_bytes), (3, 3, 3, 48));
        let (mut a, b, c) = (p.get(), p.get(), p.get());
        a.reserve_exact(40);
        assert_eq!(a.capacity(), 40);
        drop(a);
        drop(b);
        drop(c);
        let s = p.stats().snapshot();
        assert_eq!((s.hits, s.misses, s.returns, s.discards, s.retained_count, s.retained_bytes), (3, 3, 6, 1, 2, 32));
    }

    #[test]
    fn grown_buffer_beyond_the_budget_is_shrunk_and_kept() {
        // Budget 2 × 16 = 32 bytes: a 64-byte buffer does not fit beside a
        // 16-byte one, so it comes back as a 16-byte buffer.
        let p = pool(2);
        let (fresh, mut grown) = (p.get(), p.get());
        grown.reserve_exact(64);
        drop(fresh);
        drop(grown);
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.returns, s.discards, s.retained_count, s.retained_bytes), (2, 2, 0, 2, 32));
        let (a, b) = (p.get(), p.get());
        assert_eq!((a.capacity(), b.capacity()), (16, 16));
        assert_eq!(p.stats().snapshot().hits, 2);
    }

    #[test]
    fn buffer_filling_the_budget_exactly_is_kept() {
        // Budget 2 × 16 = 32 bytes: a 32-byte buffer alone fills it.
        let p = pool(2);
        let mut grown = p.get();
        grown.reserve_exact(32);
        assert_eq!(grown.capacity(), 32);
        drop(grown);
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.returns, s.discards, s.retained_count, s.retained_bytes), (1, 1, 0, 1, 32));
        assert_eq!(p.get().capacity(), 32);
    }

    #[test]
    fn a_full_budget_gives_up_its_largest_buffer_for_a_small_one() {
        // Budget 2 × 16 = 32 bytes, filled by one 32-byte buffer: a fresh
        // 16-byte buffer coming back takes its place (two small buffers
        // serve more gets than one big one).
        let p = pool(2);
        let (fresh, mut grown) = (p.get(), p.get());
        grown.reserve_exact(32);
        drop(grown);
        drop(fresh);
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.returns, s.discards, s.retained_count, s.retained_bytes), (2, 2, 1, 1, 16));
        assert_eq!(p.get().capacity(), 16);
    }

    #[test]
    fn a_buffer_got_on_write_is_taken_at_its_first_write() {
        let p = pool(2);
        let mut lazy = p.get_on_write();
        lazy.clear();
        assert!(lazy.is_empty());
        assert_eq!(p.stats().snapshot(), Default::default(), "reading or clearing takes nothing");
        lazy.extend_from_slice(b"x");
        assert_eq!((lazy.capacity(), p.stats().snapshot().misses), (16, 1));
        drop(lazy);
        drop(p.get_on_write());
        let s = p.stats().snapshot();
        assert_eq!((s.hits, s.misses, s.returns, s.retained_count), (0, 1, 1, 1), "an untouched one returns nothing");
    }

    #[test]
    fn unpooled_buffer_touches_no_pool() {
        let p = pool(2);
        drop(PooledBuf::unpooled(8));
        assert_eq!(p.stats().snapshot(), Default::default());
    }
}
