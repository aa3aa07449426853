//! A counting global allocator with per-thread counters.
//!
//! A shard thread points the allocator at its own counters; every allocation
//! on that thread bumps them with a plain load and store (single writer), so
//! leaving it on costs a thread-local read per allocation. Other threads are
//! not counted. The binary installs it; tests and benches may install it too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Allocation counters of one thread.
#[derive(Default, Debug)]
pub struct AllocCounters {
    pub allocs: AtomicU64,
    pub bytes: AtomicU64,
    /// Of `allocs`, those made while a request was being parsed, handled
    /// and its response written: Bingsan's own request path, as opposed to
    /// the runtime's bookkeeping when the shard parks or a socket waits.
    pub in_requests: AtomicU64,
}

static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    static COUNTERS: Cell<*const AllocCounters> = const { Cell::new(std::ptr::null()) };
}

/// Turns counting off for the whole process (`--no-alloc-metrics`).
pub fn disable() {
    ENABLED.store(false, Relaxed);
}

/// Counts this thread's allocations into `counters` until the thread ends.
/// The counters must outlive the thread (they live in shard stats that the
/// metrics registry keeps for the life of the process).
pub fn count_this_thread(counters: &'static AllocCounters) {
    COUNTERS.with(|c| c.set(counters));
}

/// Allocations made by this thread so far (0 when it is not counted).
pub fn this_thread_allocs() -> u64 {
    COUNTERS.with(|c| {
        let p = c.get();
        if p.is_null() {
            0
        } else {
            // SAFETY: set from a &'static reference.
            unsafe { (*p).allocs.load(Relaxed) }
        }
    })
}

/// Counts the allocations made between its creation and its drop into
/// [`AllocCounters::in_requests`]. Exact only when no other task runs in
/// between, i.e. when the request does not suspend (the hot read path).
pub struct RequestScope {
    start: u64,
}

impl RequestScope {
    pub fn begin() -> RequestScope {
        RequestScope { start: this_thread_allocs() }
    }
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        let delta = this_thread_allocs() - self.start;
        COUNTERS.with(|c| {
            let p = c.get();
            if !p.is_null() && delta > 0 {
                // SAFETY: set from a &'static reference.
                let counters = unsafe { &*p };
                counters.in_requests.store(counters.in_requests.load(Relaxed) + delta, Relaxed);
            }
        });
    }
}

/// The allocator: the system allocator, counted.
pub struct CountingAlloc;

#[inline]
fn record(size: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    // `try_with`: allocations during thread teardown must not panic.
    let _ = COUNTERS.try_with(|c| {
        let p = c.get();
        if !p.is_null() {
            // SAFETY: set from a &'static reference.
            let counters = unsafe { &*p };
            counters.allocs.store(counters.allocs.load(Relaxed) + 1, Relaxed);
            counters.bytes.store(counters.bytes.load(Relaxed) + size as u64, Relaxed);
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
