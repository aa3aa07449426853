//! Work a shard hands to its blocking thread: gzip of a new version's
//! stored forms, the edit and store batch of a big table's commit, a big
//! metadata file's write, a recursive purge, a client secret's PBKDF2, a
//! `/metrics` rendering. One way out of the shard, so what leaves it is
//! found in one place.
//!
//! glommio runs a pinned shard's blocking thread on the shard's own core.
//! Its long work is therefore made of system calls of at most a slice
//! (`bulk`), since a kernel without preemption gives the core back to a
//! woken shard only between them. Running it under `SCHED_IDLE` was tried
//! and removed (`docs/performance.md`, "The seventh session"): any other
//! process on the core (a compile in CI) starved it, and an unprivileged
//! thread cannot leave `SCHED_IDLE` again, so short work would have stayed
//! below every other process too.

/// Runs `f` on the current shard's blocking thread and awaits its result.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_off_the_shard() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                // SAFETY: gettid has no preconditions.
                let shard = unsafe { libc::gettid() };
                assert_ne!(run(|| unsafe { libc::gettid() }).await, shard, "ran on the shard itself");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
