use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use bumpalo::Bump;

use super::stats::{bump, set};
use super::PoolStats;

/// A shard's free list of bump arenas for per-request scratch memory.
///
/// Each in-flight request holds its own arena, so requests that interleave at
/// await points on one core never share or reset each other's memory.
pub struct ArenaPool {
    free: RefCell<Vec<Bump>>,
    max: usize,
    keep: usize,
    stats: Arc<PoolStats>,
}

impl ArenaPool {
    /// A pool keeping at most `keep` arenas of at most `max` allocated bytes.
    pub fn new(max: usize, keep: usize, stats: Arc<PoolStats>) -> Rc<ArenaPool> {
        Rc::new(ArenaPool { free: RefCell::new(Vec::with_capacity(keep)), max, keep, stats })
    }

    /// Takes an empty arena.
    pub fn get(self: &Rc<Self>) -> ArenaGuard {
        let popped = self.free.borrow_mut().pop();
        let arena = match popped {
            Some(arena) => {
                bump(&self.stats.hits, 1);
                arena
            }
            None => {
                bump(&self.stats.misses, 1);
                Bump::new()
            }
        };
        self.publish_retained();
        ArenaGuard { arena: Some(arena), pool: self.clone() }
    }

    fn put(&self, mut arena: Bump) {
        let mut free = self.free.borrow_mut();
        if arena.allocated_bytes() > self.max || free.len() >= self.keep {
            bump(&self.stats.discards, 1);
            return;
        }
        // Reset keeps only the largest chunk, so steady state reuses it.
        arena.reset();
        bump(&self.stats.returns, 1);
        free.push(arena);
        drop(free);
        self.publish_retained();
    }

    fn publish_retained(&self) {
        let free = self.free.borrow();
        let bytes: usize = free.iter().map(Bump::allocated_bytes).sum();
        set(&self.stats.retained_bytes, bytes as u64);
        set(&self.stats.retained_count, free.len() as u64);
    }

    /// This pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }
}

/// An arena on loan from an [`ArenaPool`]; reset and returned when dropped.
pub struct ArenaGuard {
    arena: Option<Bump>,
    pool: Rc<ArenaPool>,
}

impl Deref for ArenaGuard {
    type Target = Bump;
    fn deref(&self) -> &Bump {
        self.arena.as_ref().expect("arena present until drop")
    }
}

impl Drop for ArenaGuard {
    fn drop(&mut self) {
        if let Some(arena) = self.arena.take() {
            self.pool.put(arena);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_reset_and_reused() {
        let p = ArenaPool::new(1 << 20, 2, Arc::default());
        {
            let a = p.get();
            a.alloc_slice_fill_copy(100, 7u8);
        }
        let a = p.get();
        let s = p.stats().snapshot();
        assert_eq!((s.misses, s.hits, s.returns), (1, 1, 1));
        // The retained chunk is reused: a small allocation needs no new chunk.
        let before = a.allocated_bytes();
        a.alloc_slice_fill_copy(100, 1u8);
        assert_eq!(a.allocated_bytes(), before);
    }

    #[test]
    fn grown_arena_is_discarded() {
        let p = ArenaPool::new(1024, 2, Arc::default());
        {
            let a = p.get();
            a.alloc_slice_fill_copy(4096, 0u8);
        }
        let s = p.stats().snapshot();
        assert_eq!((s.returns, s.discards, s.retained_count), (0, 1, 0));
    }

    #[test]
    fn interleaved_requests_get_distinct_arenas() {
        let p = ArenaPool::new(1 << 20, 4, Arc::default());
        let a = p.get();
        let b = p.get();
        let x = a.alloc(1u64);
        drop(b); // resetting b must not touch a's memory
        assert_eq!(*x, 1);
        assert_eq!(p.stats().snapshot().misses, 2);
    }
}
