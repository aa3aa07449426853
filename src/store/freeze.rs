//! A pause of the store's writers for a consistent snapshot (online backup):
//! while frozen, a batch about to be applied waits (asynchronously: its
//! shard goes on serving reads and other requests) and batches being applied
//! finish first, so the snapshot holds every batch whole or not at all.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Freeze {
    frozen: AtomicBool,
    /// Batches being applied right now (between `enter` and the guard's drop).
    applying: AtomicUsize,
    waiters: Mutex<Vec<Waker>>,
}

/// Held while one batch is applied; a freeze waits for it.
pub struct Applying<'a>(&'a Freeze);

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        self.0.applying.fetch_sub(1, SeqCst);
    }
}

/// How long a freeze waits for batches being applied (sled transactions of
/// a few keys: microseconds) before giving up.
const DRAIN: Duration = Duration::from_secs(2);

impl Freeze {
    /// Resolves once no freeze is in force; the guard keeps the next one
    /// from starting until the batch is applied. (SeqCst on both sides: a
    /// writer either sees the freeze or is seen by it.)
    pub async fn enter(&self) -> Applying<'_> {
        loop {
            self.applying.fetch_add(1, SeqCst);
            if !self.frozen.load(SeqCst) {
                return Applying(self);
            }
            self.applying.fetch_sub(1, SeqCst);
            self.thawed().await;
        }
    }

    fn thawed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if !self.frozen.load(SeqCst) {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.lock().expect("freeze waiters");
            if !self.frozen.load(SeqCst) {
                return Poll::Ready(());
            }
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// Runs `f` with writers paused and no batch half applied. For one
    /// caller at a time (the admin thread); never call it on a shard.
    pub fn while_frozen<T>(&self, f: impl FnOnce() -> T) -> Result<T, String> {
        self.frozen.store(true, SeqCst);
        let _thaw = Thaw(self);
        let deadline = Instant::now() + DRAIN;
        while self.applying.load(SeqCst) != 0 {
            if Instant::now() >= deadline {
                return Err("writes in progress did not finish within 2 s".into());
            }
            std::thread::yield_now();
        }
        Ok(f())
    }
}

/// Lifts the freeze and wakes the waiting writers, also if `f` panics.
struct Thaw<'a>(&'a Freeze);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.frozen.store(false, SeqCst);
        let waiters = std::mem::take(&mut *self.0.waiters.lock().expect("freeze waiters"));
        waiters.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::Freeze;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn writers_wait_while_frozen_and_a_freeze_waits_for_writers() {
        let freeze = Arc::new(Freeze::default());
        let wrote = Arc::new(AtomicBool::new(false));
        // A batch in progress: the freeze cannot start until it ends.
        let guard = futures_lite::future::block_on(freeze.enter());
        let (f, w) = (freeze.clone(), wrote.clone());
        let freezer = std::thread::spawn(move || {
            f.while_frozen(|| {
                let writer = {
                    let (f, w) = (f.clone(), w.clone());
                    std::thread::spawn(move || {
                        let _g = futures_lite::future::block_on(f.enter());
                        w.store(true, Ordering::SeqCst);
                    })
                };
                std::thread::sleep(Duration::from_millis(100));
                // The writer waits for the thaw.
                let during = w.load(Ordering::SeqCst);
                (during, writer)
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!freezer.is_finished(), "the freeze did not wait for the batch in progress");
        drop(guard);
        let (during, writer) = freezer.join().unwrap();
        assert!(!during, "a writer went ahead while frozen");
        writer.join().unwrap();
        assert!(wrote.load(Ordering::SeqCst), "the writer never resumed");
    }
}
