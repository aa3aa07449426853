//! The shard's background thread: the long work of big tables (a
//! 10,000-snapshot table's edit and compression, its store batch and value
//! files, its metadata file's writes and syncs, removals of big files,
//! purges), away from the shard's executor and from glommio's blocking
//! thread.
//!
//! It shares the shard's core (the caller's affinity) at the lowest
//! priority (nice 19), and while it works a timer makes it yield every
//! 100 µs. Both are needed: a kernel preempts a running thread only at its
//! tick (4 ms at HZ 250) unless another wakes, and a shard busy with
//! requests is runnable, not woken, so at equal priority this work held the
//! core for ticks at a time while the shard waited with requests in hand
//! (reads beside big commits: p99 5–7 ms against 0.2–0.4 alone,
//! `docs/performance.md`). At nice 19 the shard's claim comes first and the
//! yield hands the core back at once.
//!
//! Short work (a typical table's gzip, ~50 µs) stays on glommio's blocking
//! thread at the shard's priority: at nice 19 a busy shard starves it, and
//! commits across 256 tables fell to 0.55× (`docs/performance.md`).

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::Once;
use std::time::Duration;

/// How long the thread works before it offers the core back.
pub const YIELD_EVERY: Duration = Duration::from_micros(100);

/// The thread's nice value: the lowest priority short of `SCHED_IDLE`,
/// which other processes on the core could starve outright.
const NICE: libc::c_int = 19;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// This thread's background thread, started on first use.
    static THREAD: RefCell<Option<mpsc::Sender<Job>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's background thread and waits for it without
/// blocking the executor; a panic in `f` is raised here.
pub async fn run<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    THREAD.with(|thread| {
        let mut thread = thread.borrow_mut();
        let sender = thread.get_or_insert_with(spawn);
        // Jobs catch their panics, so the thread lives as long as its sender.
        sender.send(job).expect("the background thread runs while its sender lives");
    });
    match rx.await.expect("every job sends its outcome") {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts a background thread on the caller's CPUs; it ends when the
/// returned sender (the caller's thread-local) is dropped.
fn spawn() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let cpus = affinity();
    let name = std::thread::current().name().and_then(|n| n.rsplit('-').next()).unwrap_or("").to_owned();
    std::thread::Builder::new()
        .name(format!("bingsan-bg-{name}"))
        .spawn(move || {
            if let Some(cpus) = cpus {
                // SAFETY: a plain system call on this thread with a set it owns.
                unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) };
            }
            // SAFETY: a plain system call; on Linux it sets this thread's nice value.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE) };
            let timer = YieldTimer::new();
            for job in rx {
                if let Some(t) = &timer {
                    t.set(YIELD_EVERY);
                }
                job();
                if let Some(t) = &timer {
                    t.set(Duration::ZERO);
                }
            }
        })
        .expect("start the background thread");
    tx
}

/// The calling thread's CPU affinity.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most the size given into `set`.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    ok.then_some(set)
}

/// Signals to the background thread that it has worked `YIELD_EVERY`.
fn yield_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

thread_local! {
    /// Times this thread was signalled to offer its core back (tests; a
    /// const thread-local, so the signal handler never initialises it).
    static YIELDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

extern "C" fn on_yield_signal(_: libc::c_int) {
    YIELDS.with(|y| y.set(y.get() + 1));
    // SAFETY: a system call with no arguments, which cannot fail on Linux
    // (so errno, which the interrupted code may read, is left alone).
    unsafe { libc::sched_yield() };
}

/// A `CLOCK_MONOTONIC` timer that signals this thread alone.
struct YieldTimer(libc::timer_t);

impl YieldTimer {
    /// None when the system refuses a timer: the thread then yields only
    /// at the kernel's ticks.
    fn new() -> Option<Self> {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            // SAFETY: installs a handler that only bumps an atomic and calls
            // sched_yield; SA_RESTART resumes the system calls it interrupts.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_yield_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(yield_signal(), &action, std::ptr::null_mut());
            }
        });
        // SAFETY: an all-zero sigevent is valid; the fields set select a
        // signal to this thread.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = yield_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: the kernel reads `event` and writes the new timer's id.
        let created = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut id) } == 0;
        created.then_some(Self(id))
    }

    /// Fires every `every` from now on; zero disarms.
    fn set(&self, every: Duration) {
        let spec = libc::timespec { tv_sec: every.as_secs() as libc::time_t, tv_nsec: every.subsec_nanos() as _ };
        let value = libc::itimerspec { it_interval: spec, it_value: spec };
        // SAFETY: `self.0` is a live timer of this thread.
        unsafe { libc::timer_settime(self.0, 0, &value, std::ptr::null_mut()) };
    }
}

impl Drop for YieldTimer {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a live timer, deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::time::Instant;

    fn on_executor<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(test).unwrap().join().unwrap();
    }

    /// The CPUs of a set.
    fn cpus_of(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: CPU_ISSET reads the set within its size.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, set) }).collect()
    }

    #[test]
    fn runs_jobs_on_one_low_priority_thread_on_the_callers_cpus() {
        on_executor(|| async {
            let here = std::thread::current().id();
            let (first, nice, cpus) = run(|| {
                // SAFETY: a plain system call about this thread.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                (std::thread::current().id(), nice, affinity().map(|s| cpus_of(&s)))
            })
            .await;
            assert_ne!(first, here);
            assert_eq!(nice, NICE);
            assert_eq!(cpus, affinity().map(|s| cpus_of(&s)));
            assert_eq!(run(|| std::thread::current().id()).await, first, "one thread per caller");
        });
    }

    #[test]
    fn a_long_job_offers_its_core_back_and_an_idle_thread_is_left_alone() {
        on_executor(|| async {
            let (during, after) = run(|| {
                let before = YIELDS.with(|y| y.get());
                let start = Instant::now();
                while start.elapsed() < 20 * YIELD_EVERY {
                    std::hint::spin_loop();
                }
                (YIELDS.with(|y| y.get()) - before, YIELDS.with(|y| y.get()))
            })
            .await;
            assert!(during > 0, "a job of 20 periods was never signalled");
            std::thread::sleep(20 * YIELD_EVERY);
            let next = run(|| YIELDS.with(|y| y.get())).await;
            // One signal may land between the count and the disarm.
            assert!(next <= after + 1, "the timer ran between jobs: {after} then {next}");
        });
    }

    #[test]
    fn a_panic_in_a_job_reaches_the_caller_and_the_thread_lives_on() {
        on_executor(|| async {
            let caught = std::panic::AssertUnwindSafe(run(|| panic!("boom"))).catch_unwind().await;
            assert!(caught.is_err());
            assert_eq!(run(|| 7).await, 7);
        });
    }
}
