//! Work a shard hands to its blocking thread (and long work of other
//! threads on its core): gzip of a new version's
//! stored forms, the edit and store batch of a big table's commit, a big
//! metadata file's write, a recursive purge, a client secret's PBKDF2, a
//! `/metrics` rendering.
//!
//! glommio runs a pinned shard's blocking thread on the shard's own core,
//! where the OS scheduler shares the core between the two. Long work (tens of
//! ms for a 10,000-snapshot table's commit) at the shard's priority delayed
//! the shard by up to a scheduler slice each time it woke, so [`run_long`]
//! runs under `SCHED_IDLE`: the shard preempts it as soon as it becomes
//! runnable (at once in user space; in the kernel at the next return from a
//! system call, so long work makes its system calls in slices), and it
//! gets the core whenever the shard waits. Short work ([`run`]: a typical
//! table's gzip, ~50 µs) keeps the shard's priority: under `SCHED_IDLE` a
//! busy shard starved it, and commits across 256 tables fell to ~0.6× with
//! twice the context switches per commit (`docs/performance.md`).

use std::cell::Cell;

/// Runs short work on the current shard's blocking thread, at the shard's
/// priority, and awaits its result.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor()
        .spawn_blocking(move || {
            set_idle(false);
            f()
        })
        .await
}

/// Runs long work (more than a few hundred µs) on the current shard's
/// blocking thread under `SCHED_IDLE`, and awaits its result.
pub async fn run_long<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor()
        .spawn_blocking(move || {
            set_idle(true);
            f()
        })
        .await
}

/// Runs `f` on the calling thread under `SCHED_IDLE`, then puts the thread
/// back: long work on a thread whose other work commits wait for (the
/// group-commit thread's check and sync of a big record's blob).
pub fn below_shard<T>(f: impl FnOnce() -> T) -> T {
    set_idle(true);
    let out = f();
    set_idle(false);
    out
}

thread_local! {
    static IDLE: Cell<bool> = const { Cell::new(false) };
}

/// Puts the calling thread under `SCHED_IDLE` or back under `SCHED_OTHER`,
/// with a system call only when that changes its policy. A failure (a
/// seccomp profile without `sched_setscheduler`) leaves the thread as it
/// was: slower reads beside big commits, nothing worse.
fn set_idle(idle: bool) {
    IDLE.with(|current| {
        if current.get() == idle {
            return;
        }
        let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
            current.set(idle);
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), idle, "blocking thread kept its scheduling policy");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: sched_getscheduler only reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn long_work_runs_under_sched_idle_and_short_work_does_not() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // SAFETY: gettid has no preconditions.
                let shard = unsafe { libc::gettid() };
                let (long, tid) = run_long(|| (policy(), unsafe { libc::gettid() })).await;
                assert_eq!(long, libc::SCHED_IDLE);
                assert_ne!(tid, shard, "ran on the shard itself");
                assert_eq!(run(policy).await, libc::SCHED_OTHER, "short work after long work kept SCHED_IDLE");
                assert_eq!(run_long(policy).await, libc::SCHED_IDLE);
                assert_eq!(policy(), libc::SCHED_OTHER, "the shard itself was lowered");
                assert_eq!(below_shard(policy), libc::SCHED_IDLE);
                assert_eq!(policy(), libc::SCHED_OTHER, "below_shard did not put the thread back");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
