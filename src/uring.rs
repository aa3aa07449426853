//! io_uring settings shared by every glommio executor of the process: the
//! server's shards and the load generator's. A module of its own so that
//! neither depends on the other.

/// Submission-queue depth of every executor. The kernel sizes a ring's
/// cancel hash table from it (one bucket per 32 completion entries, at most
/// 256), and glommio cancels a preemption timer on every reactor turn; each
/// cancel walks one bucket of the pending socket polls. At glommio's default
/// of 128 that is 8 buckets: with 10,000 idle connections a turn walked
/// ~1,250 polls, half a shard's CPU.
pub const RING_DEPTH: usize = 4096;
