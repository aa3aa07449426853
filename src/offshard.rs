//! Work a shard hands to its blocking thread: gzip of a new version's
//! stored forms, the edit and store batch of a big table's commit, a
//! recursive purge, a client secret's PBKDF2, a `/metrics` rendering.
//!
//! glommio runs a pinned shard's blocking thread on the shard's own core,
//! where the OS scheduler shares the core between the two. Tens of ms of
//! such work (a 10,000-snapshot table's commit) then delay every request of
//! the shard by up to a scheduler slice (~1–3 ms) each time the shard
//! wakes. So the blocking thread runs under `SCHED_IDLE`: the shard preempts
//! it the instant it becomes runnable, and it still gets the core whenever
//! the shard waits (which, below saturation, is most of the time).

use std::cell::Cell;

/// Runs `f` on the current shard's blocking thread and awaits its result.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor()
        .spawn_blocking(move || {
            yield_core_to_shard();
            f()
        })
        .await
}

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Puts the calling thread under `SCHED_IDLE`, once per thread. A failure
/// (a seccomp profile without `sched_setscheduler`) leaves the thread as it
/// was: slower reads beside big commits, nothing worse.
fn yield_core_to_shard() {
    LOWERED.with(|lowered| {
        if lowered.replace(true) {
            return;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param; 0 names the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "blocking thread kept its scheduling policy");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_thread_under_sched_idle() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // SAFETY: sched_getscheduler only reads the calling thread's policy.
                let (policy, tid) = run(|| unsafe { (libc::sched_getscheduler(0), libc::gettid()) }).await;
                assert_eq!(policy, libc::SCHED_IDLE);
                assert_ne!(tid, unsafe { libc::gettid() }, "ran on the shard itself");
                // SAFETY: as above.
                assert_ne!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE, "the shard was lowered");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
