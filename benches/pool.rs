//! Pools: the shard-local `BufPool` against shared pools, `ArenaPool`
//! against a fresh bump arena, and pooled token encoding.
//!
//! * `buf_1t`, `buf_2t`: one get, a 64-byte write, one put. `baseline_mutex`
//!   is a `Mutex<Vec<Vec<u8>>>` shared by all threads, `ring` a shared
//!   lock-free bounded MPMC queue (Vyukov's, below), `alloc` no pool at all
//!   (`Vec::with_capacity` per operation), `ours` a `BufPool` per thread, as
//!   each shard has its own. All keep at most 128 buffers of 4 KiB initial
//!   capacity (the `PoolConfig` defaults). With 2 threads, time/op is the
//!   wall time of both threads divided by the operations of both.
//! * `arena`: take an arena, allocate request scratch (a 200-byte key and
//!   two short strings), drop it; `ArenaPool` against `Bump::new()`.
//! * `token`: 32 random bytes (two `Uuid::new_v4`) hex-encoded into a fresh
//!   `String` (baseline) or into a buffer from a token `BufPool` (ours).
//!
//! `cargo bench --bench pool`

mod common;

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bingsan::pool::{ArenaPool, BufPool, PoolConfig, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD};
use bumpalo::Bump;
use common::Counts;

#[global_allocator]
static A: bingsan::alloc::CountingAlloc = bingsan::alloc::CountingAlloc;

const CFG: PoolConfig = PoolConfig {
    buffer_initial: 4096,
    buffer_max: 65536,
    buffers_per_shard: 128,
    arena_max: 8 * 1024,
    arenas_per_shard: 64,
};

const PAYLOAD: [u8; 64] = [b'x'; 64];

// ------------------------------------------------------------ shared pools

/// The obvious shared pool: a free list behind a mutex.
#[derive(Default)]
struct MutexPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl MutexPool {
    fn get(&self) -> Vec<u8> {
        let popped = self.free.lock().unwrap().pop();
        popped.unwrap_or_else(|| Vec::with_capacity(CFG.buffer_initial))
    }

    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > CFG.buffer_max {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap();
        if free.len() < CFG.buffers_per_shard {
            free.push(buf);
        }
    }
}

/// A slot of the ring: its sequence number says whose turn it is.
struct Slot {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<Vec<u8>>>,
}

/// Keeps the two cursors on separate cache lines.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// Dmitry Vyukov's bounded MPMC queue (the design of crossbeam's
/// `ArrayQueue`). A slot with `seq == pos` is free for the producer at
/// `pos`; after writing it publishes `pos + 1`, which makes it ready for the
/// consumer at `pos`; the consumer publishes `pos + capacity`, freeing it
/// for the producer one lap later. Cursors only move by compare-and-swap,
/// so a slot is written or read by exactly one thread per lap. Like
/// `ArrayQueue`, "full" and "empty" are decided from the other cursor, so a
/// peer between its CAS and its publish makes us wait, not fail. No locks,
/// but not strictly lock-free: a preempted peer stalls that one slot.
struct Ring {
    slots: Box<[Slot]>,
    mask: usize,
    head: Padded,
    tail: Padded,
}

// SAFETY: a slot's value is only touched by the thread that won the cursor
// CAS for it, and the Acquire/Release pair on `seq` orders that access.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

impl Ring {
    fn new(capacity: usize) -> Ring {
        assert!(capacity.is_power_of_two());
        let slots = (0..capacity)
            .map(|i| Slot { seq: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Ring { slots, mask: capacity - 1, head: Padded(AtomicUsize::new(0)), tail: Padded(AtomicUsize::new(0)) }
    }

    /// Gives the value back when the ring is full.
    fn push(&self, value: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut spins = 0u32;
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.tail.0.compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: we own this slot for this lap (see `Ring`).
                        unsafe { (*slot.value.get()).write(value) };
                        slot.seq.store(pos + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                // The slot still holds the item of the previous lap: full,
                // unless its consumer already took it and is about to publish.
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.head.0.load(Ordering::Relaxed).wrapping_add(self.mask + 1) == pos {
                    return Err(value);
                }
                backoff(&mut spins);
                pos = self.tail.0.load(Ordering::Relaxed);
            } else {
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    fn pop(&self) -> Option<Vec<u8>> {
        let mut spins = 0u32;
        let mut pos = self.head.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - (pos + 1) as isize;
            if diff == 0 {
                match self.head.0.compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the producer published this slot (seq == pos + 1)
                        // and we won it; it was initialized by that push.
                        let value = unsafe { (*slot.value.get()).assume_init_read() };
                        slot.seq.store(pos + self.mask + 1, Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                // Nothing published here: empty, unless a producer already
                // took the slot and is about to publish.
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.tail.0.load(Ordering::Relaxed) == pos {
                    return None;
                }
                backoff(&mut spins);
                pos = self.head.0.load(Ordering::Relaxed);
            } else {
                pos = self.head.0.load(Ordering::Relaxed);
            }
        }
    }
}

/// Waits for another thread to finish its step: spin briefly, then yield
/// (a preempted peer can only finish once it runs again).
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

/// A buffer pool over the ring, with the same caps as `BufPool`.
struct RingPool {
    ring: Ring,
}

impl RingPool {
    fn new() -> RingPool {
        RingPool { ring: Ring::new(CFG.buffers_per_shard.next_power_of_two()) }
    }

    fn get(&self) -> Vec<u8> {
        self.ring.pop().unwrap_or_else(|| Vec::with_capacity(CFG.buffer_initial))
    }

    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= CFG.buffer_max {
            buf.clear();
            let _ = self.ring.push(buf);
        }
    }
}

// ---------------------------------------------------------------- drivers

/// One buffer operation of each kind, for one thread.
#[derive(Clone)]
enum Kind {
    Mutex(Arc<MutexPool>),
    Ring(Arc<RingPool>),
    Alloc,
    Ours,
}

/// Per-thread state: the shard-local pool lives on its thread.
fn make_op(kind: &Kind) -> Box<dyn FnMut() -> usize> {
    match kind.clone() {
        Kind::Mutex(p) => Box::new(move || {
            let mut b = p.get();
            b.extend_from_slice(black_box(&PAYLOAD));
            let n = b.len();
            p.put(b);
            n
        }),
        Kind::Ring(p) => Box::new(move || {
            let mut b = p.get();
            b.extend_from_slice(black_box(&PAYLOAD));
            let n = b.len();
            p.put(b);
            n
        }),
        Kind::Alloc => Box::new(|| {
            let mut b = Vec::with_capacity(CFG.buffer_initial);
            b.extend_from_slice(black_box(&PAYLOAD));
            black_box(&b);
            b.len()
        }),
        Kind::Ours => {
            let pool: Rc<BufPool> =
                BufPool::new(CFG.buffer_initial, CFG.buffer_max, CFG.buffers_per_shard, Arc::default());
            Box::new(move || {
                let mut b = pool.get();
                b.extend_from_slice(black_box(&PAYLOAD));
                b.len()
            })
        }
    }
}

/// Wall time of `threads` threads each doing `iters` operations, divided
/// by `threads` so that criterion's division by `iters` gives time per
/// operation over all threads.
fn run_threads(kind: &Kind, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (kind, barrier) = (kind.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut op = make_op(&kind);
                op();
                barrier.wait();
                for _ in 0..iters {
                    black_box(op());
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed() / threads as u32
}

/// Allocations of `threads` threads each doing `iters` operations, each
/// thread counted on its own counters.
fn count_threads(kind: &Kind, threads: usize, iters: u64) -> Counts {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let kind = kind.clone();
            std::thread::spawn(move || {
                let counters = common::count_this_thread();
                let op = make_op(&kind);
                common::count_loop(counters, iters, op)
            })
        })
        .collect();
    let mut total = Counts::default();
    for h in handles {
        total.add(h.join().unwrap());
    }
    total
}

fn bench_buffers(bench: &mut common::Bench, threads: usize) {
    let kinds = [
        ("baseline_mutex", Kind::Mutex(Arc::default())),
        ("ring", Kind::Ring(Arc::new(RingPool::new()))),
        ("alloc", Kind::Alloc),
        ("ours", Kind::Ours),
    ];
    let mut g = bench.group(&format!("buf_{threads}t"));
    for (name, kind) in &kinds {
        if threads == 1 {
            // On the bench thread itself: no spawn in the timed loop.
            let mut op = make_op(kind);
            g.case(name, &mut op);
        } else {
            g.custom(name, |iters| run_threads(kind, threads, iters), |iters| count_threads(kind, threads, iters));
        }
    }
    g.finish();
}

fn bench_arenas(bench: &mut common::Bench) {
    fn scratch(a: &Bump) -> usize {
        let key = a.alloc_slice_fill_copy(200, black_box(7u8));
        let ns = a.alloc_str(black_box("analytics"));
        let name = a.alloc_str(black_box("page_views"));
        key.len() + ns.len() + name.len()
    }
    let pool = ArenaPool::new(CFG.arena_max, CFG.arenas_per_shard, Arc::default());
    let mut g = bench.group("arena");
    g.case("baseline", || {
        let a = Bump::new();
        scratch(&a)
    });
    g.case("ours", || {
        let a = pool.get();
        scratch(&a)
    });
    g.finish();
}

fn bench_tokens(bench: &mut common::Bench) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn random32() -> [u8; 32] {
        let mut r = [0u8; 32];
        r[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        r[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        r
    }
    let pool = BufPool::new(TOKEN_BUFFER, TOKEN_BUFFER, TOKEN_BUFFERS_PER_SHARD, Arc::default());
    let mut g = bench.group("token");
    g.case("baseline", || {
        let mut s = String::with_capacity(64);
        for b in random32() {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        black_box(&s);
        s.len()
    });
    g.case("ours", || {
        let mut s = pool.get();
        for b in random32() {
            s.push(HEX[(b >> 4) as usize]);
            s.push(HEX[(b & 15) as usize]);
        }
        black_box(&s);
        s.len()
    });
    g.finish();
}

/// The ring neither loses nor duplicates: two threads keep taking and
/// returning eight tagged buffers; afterwards all eight are there once.
fn check_ring() {
    let ring = Arc::new(Ring::new(8));
    for i in 0..8u8 {
        ring.push(vec![i]).unwrap();
    }
    assert!(ring.push(vec![99]).is_err(), "ring accepts past capacity");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    if let Some(v) = ring.pop() {
                        ring.push(v).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut seen: Vec<u8> = std::iter::from_fn(|| ring.pop()).map(|v| v[0]).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<u8>>(), "ring lost or duplicated buffers");
}

fn main() {
    check_ring();
    let mut bench = common::Bench::new("pool");
    bench_buffers(&mut bench, 1);
    bench_buffers(&mut bench, 2);
    bench_arenas(&mut bench);
    bench_tokens(&mut bench);
    bench.finish();
}
