//! A counting global allocator with per-thread counters.
//!
//! A shard thread points the allocator at its own counters; every allocation
//! on that thread bumps them with a plain load and store (single writer), so
//! leaving it on costs a thread-local read per allocation. Other threads are
//! not counted. The binary installs it; tests and benches may install it too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Allocation counters of one thread.
#[derive(Default, Debug)]
pub struct AllocCounters {
    pub allocs: AtomicU64,
    pub bytes: AtomicU64,
    /// Of `allocs`, those made while a request's own future was polled
    /// (parsing, handling, writing the answer): Bingsan's request path, as
    /// opposed to other tasks and the runtime's bookkeeping while the
    /// request waits (parking, timers, a socket's readiness).
    pub in_requests: AtomicU64,
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// The thread's counters, and whether a request's future is being polled.
struct ThreadState {
    counters: Cell<*const AllocCounters>,
    in_request: Cell<bool>,
}

thread_local! {
    static STATE: ThreadState =
        const { ThreadState { counters: Cell::new(std::ptr::null()), in_request: Cell::new(false) } };
}

/// Turns counting off for the whole process (`--no-alloc-metrics`).
pub fn disable() {
    ENABLED.store(false, Relaxed);
}

/// Counts this thread's allocations into `counters` until the thread ends.
/// The counters must outlive the thread (they live in shard stats that the
/// metrics registry keeps for the life of the process).
pub fn count_this_thread(counters: &'static AllocCounters) {
    STATE.with(|s| s.counters.set(counters));
}

/// Runs `fut`, counting the allocations made while it is polled into
/// [`AllocCounters::in_requests`]. Exact for a request that suspends too
/// (a write waiting for durability): what other tasks and the runtime
/// allocate meanwhile is not its own.
pub async fn in_request<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let outer = STATE.with(|s| s.in_request.replace(true));
        let polled = fut.as_mut().poll(cx);
        STATE.with(|s| s.in_request.set(outer));
        polled
    })
    .await
}

/// The allocator: the system allocator, counted.
pub struct CountingAlloc;

#[inline]
fn record(size: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    // `try_with`: allocations during thread teardown must not panic.
    let _ = STATE.try_with(|s| {
        let p = s.counters.get();
        if !p.is_null() {
            // SAFETY: set from a &'static reference.
            let counters = unsafe { &*p };
            counters.allocs.store(counters.allocs.load(Relaxed) + 1, Relaxed);
            counters.bytes.store(counters.bytes.load(Relaxed) + size as u64, Relaxed);
            if s.in_request.get() {
                counters.in_requests.store(counters.in_requests.load(Relaxed) + 1, Relaxed);
            }
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}
