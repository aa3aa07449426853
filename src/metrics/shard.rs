use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::alloc::AllocCounters;
use crate::disk::{Cause, Target};
use crate::pool::PoolStats;
use crate::routes::Operation;

/// Status codes counted one by one; anything else counts as the last slot.
pub const STATUSES: [u16; 22] =
    [200, 201, 204, 304, 400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 429, 431, 500, 501, 503, 504, 0];

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

const OPS: usize = Operation::ALL.len();

/// Latency histogram of one operation.
#[derive(Default)]
pub struct Latency {
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Latency {
    /// Adds one observation (single writer).
    pub fn observe(&self, micros: u64) {
        let b = LATENCY_BUCKETS_US.iter().position(|&ub| micros <= ub).unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        add(&self.buckets[b], 1);
        add(&self.count, 1);
        add(&self.sum_us, micros);
    }
}

/// Store operations timed for `bingsan_store_operation_duration_seconds`.
#[derive(Clone, Copy, Debug)]
pub enum StoreOp {
    Get,
    Scan,
    /// An atomic batch, until it is durable.
    Apply,
}

impl StoreOp {
    pub const ALL: [StoreOp; 3] = [StoreOp::Get, StoreOp::Scan, StoreOp::Apply];

    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Scan => "scan",
            StoreOp::Apply => "apply",
        }
    }
}

thread_local! {
    /// The stats of the shard running on this thread, for code that is
    /// shared by all shards (the store) to record into.
    static CURRENT: std::cell::Cell<Option<&'static ShardStats>> = const { std::cell::Cell::new(None) };
}

/// Records a store operation on this thread's shard (nothing elsewhere).
pub fn observe_store(op: StoreOp, micros: u64) {
    CURRENT.with(|c| {
        if let Some(stats) = c.get() {
            stats.store[op as usize].observe(micros);
        }
    });
}

/// Counts a failed or refused write on this thread's shard (nothing
/// elsewhere), for `bingsan_write_failures_total`.
pub fn count_write_failure(target: Target, cause: Cause) {
    CURRENT.with(|c| {
        if let Some(stats) = c.get() {
            add(&stats.write_failures[target as usize][cause as usize], 1);
        }
    });
}

/// Everything one shard counts. Written only by its shard thread.
pub struct ShardStats {
    pub shard: usize,
    pub requests: [[AtomicU64; STATUSES.len()]; OPS],
    pub latency: [Latency; OPS],
    pub store: [Latency; StoreOp::ALL.len()],
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    pub commits_ok: AtomicU64,
    pub commits_conflict: AtomicU64,
    pub commits_failed: AtomicU64,
    /// Failed or refused writes, by target and cause.
    pub write_failures: [[AtomicU64; Cause::ALL.len()]; Target::ALL.len()],
    pub buffer_pool: Arc<PoolStats>,
    pub arena_pool: Arc<PoolStats>,
    pub token_pool: Arc<PoolStats>,
    pub allocs: AllocCounters,
}

#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl ShardStats {
    pub fn new(shard: usize) -> ShardStats {
        ShardStats {
            shard,
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| Latency::default()),
            store: std::array::from_fn(|_| Latency::default()),
            connections: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            commits_ok: AtomicU64::new(0),
            commits_conflict: AtomicU64::new(0),
            commits_failed: AtomicU64::new(0),
            write_failures: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buffer_pool: Arc::default(),
            arena_pool: Arc::default(),
            token_pool: Arc::default(),
            allocs: AllocCounters::default(),
        }
    }

    /// Records one answered request.
    pub fn record(&self, op: Operation, status: u16, micros: u64) {
        let s = STATUSES.iter().position(|&c| c == status).unwrap_or(STATUSES.len() - 1);
        add(&self.requests[op.index()][s], 1);
        self.latency[op.index()].observe(micros);
    }

    /// Makes this shard's stats the ones [`observe_store`] records into on
    /// the calling thread.
    pub fn install_for_this_thread(stats: &'static ShardStats) {
        CURRENT.with(|c| c.set(Some(stats)));
    }

    pub fn connection_opened(&self) {
        add(&self.connections, 1);
    }

    pub fn connection_closed(&self) {
        self.connections.store(self.connections.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// Counts a commit outcome: `Ok`, conflict (409) or other failure.
    pub fn commit(&self, outcome: CommitOutcome) {
        add(
            match outcome {
                CommitOutcome::Ok => &self.commits_ok,
                CommitOutcome::Conflict => &self.commits_conflict,
                CommitOutcome::Failed => &self.commits_failed,
            },
            1,
        );
    }

    /// Requests answered so far, over all operations and statuses.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().map(|c| c.load(Relaxed)).sum()
    }
}

/// How a commit ended, for `bingsan_commits_total{result}`.
#[derive(Clone, Copy, Debug)]
pub enum CommitOutcome {
    Ok,
    Conflict,
    Failed,
}
