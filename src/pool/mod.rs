//! Shard-local memory: buffer free lists and bump arenas.
//!
//! Every pool belongs to one shard thread (it is `!Send` through `Rc`), so
//! get and put are plain pointer pushes: no atomics, no locks. Counters are
//! single-writer atomics that the metrics thread reads without stopping us.

mod arena;
mod buf;
mod slots;
mod stats;

pub use arena::{ArenaGuard, ArenaPool};
pub use buf::{BufPool, PooledBuf};
pub use slots::{FutureSlots, InSlot};
pub use stats::PoolStats;

/// Sizing for one shard's pools.
///
/// What a shard keeps idle is bounded by construction: the buffer pool holds
/// at most `buffers_per_shard × buffer_initial` bytes of capacity in all
/// (grown buffers count in full, so fewer of them are kept), the arena pool
/// at most `arenas_per_shard × arena_max`. With the defaults that is
/// 512 KiB + 512 KiB = 1 MiB per shard, plus the 4 KiB token pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Capacity of a freshly allocated buffer (a miss).
    pub buffer_initial: usize,
    /// Buffers that grew past this are discarded instead of kept.
    pub buffer_max: usize,
    /// How many buffers a shard keeps at most; times `buffer_initial`,
    /// also the most bytes it keeps.
    pub buffers_per_shard: usize,
    /// Arenas that grew past this many bytes are discarded on return.
    pub arena_max: usize,
    /// How many arenas a shard keeps at most.
    pub arenas_per_shard: usize,
}

/// Bytes of one token buffer: random bytes plus their encoding.
pub const TOKEN_BUFFER: usize = 256;
/// Token buffers a shard keeps.
pub const TOKEN_BUFFERS_PER_SHARD: usize = 16;

impl Default for PoolConfig {
    fn default() -> Self {
        // 128 × 4 KiB of buffers plus 64 arenas of at most 8 KiB: 1 MiB per
        // shard when idle, the budget the pools issue sets.
        PoolConfig {
            buffer_initial: 4096,
            buffer_max: 65536,
            buffers_per_shard: 128,
            arena_max: 8 * 1024,
            arenas_per_shard: 64,
        }
    }
}
