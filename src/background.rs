//! The shard's background thread: long work (a big table's edit and
//! compression, its store batch and value files, its metadata file's writes
//! and syncs, removals of big files, purges, a registered gzip file's
//! gunzip, a client secret's PBKDF2), away from the shard's executor and
//! from glommio's blocking thread.
//!
//! It shares the shard's core (the caller's affinity) at the shard's
//! priority, and while it works a timer checks every 250 µs whether the
//! shard waits for the core, and if so yields it. A kernel preempts a
//! running thread only at its tick (4 ms at HZ 250) unless another wakes,
//! and a shard busy with requests is runnable, not woken: without the check
//! this work held the core for ticks at a time while the shard waited with
//! requests in hand (reads beside big commits: p99 4–7 ms against 0.2–0.4
//! alone, `docs/performance.md`).
//!
//! Why not a lower priority, or yield always: at nice 19 (or `SCHED_IDLE`)
//! any other busy process on the core starves this work, and each
//! `sched_yield` costs the thread a whole scheduler slice of its fair share
//! (EEVDF moves its deadline on), so yielding every 100 µs starved it just
//! the same: 0 commits in 2 s on a 300-snapshot table beside two busy loops,
//! where glommio's blocking thread made 28. Yielding only to a waiting shard
//! gives up share to the shard alone.
//!
//! Short work (a typical table's gzip, ~50 µs) stays on glommio's blocking
//! thread, which costs no hand-off to a thread of ours.

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::Once;
use std::time::Duration;

/// How often the working thread checks whether its shard waits for the
/// core: the longest a runnable shard waits for it. Each check is a signal
/// (its delivery saves and restores the thread's vector registers): every
/// 100 µs they cost a 10,000-snapshot commit 1.2× the CPU, every 250 µs
/// about nothing, with reads beside such commits still within 1.5× of their
/// p99 alone (`docs/performance.md`).
pub const YIELD_EVERY: Duration = Duration::from_micros(250);

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

/// Starts a background thread on the caller's CPUs (a new thread inherits
/// its creator's affinity); it ends when the returned sender (the caller's
/// thread-local) is dropped.
fn spawn() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    // SAFETY: gettid has no preconditions.
    let caller = unsafe { libc::gettid() };
    // The kernel's name (`bingsan-shard-3`), which glommio sets; the suffix
    // names the shard.
    let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
    let suffix = comm.trim_end().rsplit('-').next().unwrap_or("").to_owned();
    std::thread::Builder::new()
        .name(format!("bingsan-bg-{suffix}"))
        .spawn(move || {
            let _watched = Watched::open(caller);
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

/// Signals to the background thread that it has worked `YIELD_EVERY`.
fn yield_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

// Const thread-locals of the background thread: the signal handler reads
// them without ever initialising one.
thread_local! {
    /// `/proc/self/task/<shard>/stat`, open, or -1.
    static WATCHED: std::cell::Cell<libc::c_int> = const { std::cell::Cell::new(-1) };
    /// Timer signals taken (tests).
    static SIGNALS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Times the core was yielded to the waiting shard (tests).
    static YIELDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The caller's `stat` file, open on this thread for the signal handler.
struct Watched;

impl Watched {
    fn open(tid: libc::pid_t) -> Self {
        if let Ok(path) = std::ffi::CString::new(format!("/proc/self/task/{tid}/stat")) {
            // SAFETY: a plain system call with a NUL-terminated path.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            WATCHED.with(|w| w.set(fd));
        }
        Watched
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let fd = WATCHED.with(|w| w.replace(-1));
        if fd >= 0 {
            // SAFETY: `fd` was opened by `open` and is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// Whether the watched thread is runnable: its state in `stat` (the field
/// after the parenthesised name) is `R`. Async-signal-safe: one `pread`
/// into the stack.
fn watched_runnable() -> bool {
    let fd = WATCHED.with(|w| w.get());
    let mut buf = [0u8; 128];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let Ok(n) = usize::try_from(n) else { return false };
    let stat = &buf[..n];
    stat.iter().rposition(|&b| b == b')').and_then(|i| stat.get(i + 2)) == Some(&b'R')
}

extern "C" fn on_yield_signal(_: libc::c_int) {
    // SAFETY: errno belongs to the interrupted code: saved and restored.
    let errno = unsafe { *libc::__errno_location() };
    SIGNALS.with(|s| s.set(s.get() + 1));
    if watched_runnable() {
        YIELDS.with(|y| y.set(y.get() + 1));
        // SAFETY: a system call with no arguments.
        unsafe { libc::sched_yield() };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// A `CLOCK_MONOTONIC` timer that signals this thread alone.
struct YieldTimer(libc::timer_t);

impl YieldTimer {
    /// None when the system refuses a timer: the thread then yields only
    /// at the kernel's ticks.
    fn new() -> Option<Self> {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            // SAFETY: installs a handler that only reads a file into its stack,
            // bumps counters and may call sched_yield; SA_RESTART resumes the
            // system calls it interrupts.
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn on_executor<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(test).unwrap().join().unwrap();
    }

    /// A job that works 20 periods; what its thread's counters did meanwhile.
    fn spin_job() -> (u64, u64) {
        let (signals, yields) = (SIGNALS.with(|s| s.get()), YIELDS.with(|y| y.get()));
        let start = Instant::now();
        while start.elapsed() < 20 * YIELD_EVERY {
            std::hint::spin_loop();
        }
        (SIGNALS.with(|s| s.get()) - signals, YIELDS.with(|y| y.get()) - yields)
    }

    #[test]
    fn runs_jobs_on_one_thread_on_the_callers_cpus() {
        on_executor(|| async {
            let here = std::thread::current().id();
            let cpus = || crate::server::os::allowed_cpus().unwrap();
            let (first, theirs) = run(move || (std::thread::current().id(), cpus())).await;
            assert_ne!(first, here);
            assert_eq!(theirs, cpus());
            assert_eq!(run(|| std::thread::current().id()).await, first, "one thread per caller");
        });
    }

    #[test]
    fn a_working_thread_yields_to_a_runnable_caller_only() {
        on_executor(|| async {
            // The caller sleeps in its executor while the job runs.
            let (signals, yields) = run(spin_job).await;
            assert!(signals > 0, "a job of 20 periods was never signalled");
            // A sleeping caller woken by the tests beside it can wait for a
            // CPU (runnable) for a moment: a yield then is right. Yielding
            // at most a quarter of the signals tells it from yielding always.
            assert!(yields * 4 <= signals, "yielded to a sleeping caller: {yields} of {signals} signals");

            // The caller stays runnable (a task spinning) until the job ends.
            let done = Arc::new(AtomicBool::new(false));
            let flag = done.clone();
            let job = glommio::spawn_local(run(move || {
                let counts = spin_job();
                flag.store(true, Ordering::Release);
                counts
            }))
            .detach();
            futures_lite::future::yield_now().await;
            while !done.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let (signals, yields) = job.await.unwrap();
            assert!(signals > 0 && yields > 0, "never yielded to a runnable caller: {signals} signals");
        });
    }

    #[test]
    fn an_idle_thread_takes_no_signals() {
        on_executor(|| async {
            let after = run(|| SIGNALS.with(|s| s.get())).await;
            std::thread::sleep(20 * YIELD_EVERY);
            let next = run(|| SIGNALS.with(|s| s.get())).await;
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
