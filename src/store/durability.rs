//! Group commit: many writers, one fsync.
//!
//! A writer applies its batch in memory, takes a ticket, and waits until the
//! flusher thread reports a flush that started after the ticket was taken.
//! Every batch that arrives while a flush runs is covered by the next one, so
//! under load one fsync serves many requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

type FlushFn = Box<dyn FnMut() -> Result<(), String> + Send>;

struct Shared {
    /// Highest ticket handed out.
    issued: AtomicU64,
    /// Every ticket up to this one is durable.
    durable: AtomicU64,
    /// Set once a flush failed: the outcome of later writes is unknown.
    failed: AtomicBool,
    stop: AtomicBool,
    waiters: Mutex<Vec<(u64, Waker)>>,
    wake_flusher: Condvar,
    flusher_lock: Mutex<()>,
}

/// Owner of the flusher thread.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread; `flush` makes all prior writes durable.
    pub fn start(flush: FlushFn) -> GroupCommit {
        let shared = Arc::new(Shared {
            issued: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            wake_flusher: Condvar::new(),
            flusher_lock: Mutex::new(()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bingsan-flush".into())
            .spawn(move || flusher(&s, flush))
            .expect("spawn flusher thread");
        GroupCommit { shared, thread: Some(thread) }
    }

    /// Whether a flush failed: from then on no write may be acknowledged.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Waits until everything applied before this call is durable.
    pub fn durable(&self) -> Durable {
        let ticket = self.shared.issued.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = self.shared.flusher_lock.lock().expect("flusher lock");
        self.shared.wake_flusher.notify_one();
        Durable { shared: self.shared.clone(), ticket }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        {
            let _guard = self.shared.flusher_lock.lock().expect("flusher lock");
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake_flusher.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flusher(s: &Shared, mut flush: FlushFn) {
    loop {
        {
            let mut guard = s.flusher_lock.lock().expect("flusher lock");
            while s.issued.load(Ordering::Acquire) == s.durable.load(Ordering::Acquire) {
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                guard = s.wake_flusher.wait(guard).expect("flusher wait");
            }
        }
        // Tickets up to `target` were taken after their writes were applied,
        // so this flush covers them.
        let target = s.issued.load(Ordering::Acquire);
        if let Err(e) = flush() {
            tracing::error!(error = %e, "store flush failed; refusing further acknowledgements");
            s.failed.store(true, Ordering::Release);
        }
        s.durable.store(target, Ordering::Release);
        let ready: Vec<Waker> = {
            let mut waiters = s.waiters.lock().expect("waiters lock");
            let (done, pending): (Vec<_>, Vec<_>) = waiters.drain(..).partition(|(t, _)| *t <= target);
            *waiters = pending;
            done.into_iter().map(|(_, w)| w).collect()
        };
        ready.into_iter().for_each(Waker::wake);
    }
}

/// Resolves when its ticket is durable: `Err` if a flush failed.
pub struct Durable {
    shared: Arc<Shared>,
    ticket: u64,
}

impl Future for Durable {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ready = |s: &Shared| s.durable.load(Ordering::Acquire) >= self.ticket;
        let outcome = |s: &Shared| {
            if s.failed.load(Ordering::Acquire) {
                Err("store flush failed".to_string())
            } else {
                Ok(())
            }
        };
        if ready(&self.shared) {
            return Poll::Ready(outcome(&self.shared));
        }
        let mut waiters = self.shared.waiters.lock().expect("waiters lock");
        // Re-check under the lock: the flusher may have finished meanwhile.
        if ready(&self.shared) {
            return Poll::Ready(outcome(&self.shared));
        }
        waiters.push((self.ticket, cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn many_waiters_share_few_flushes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let f = flushes.clone();
        let gc = GroupCommit::start(Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(())
        }));
        let waits: Vec<_> = (0..50).map(|_| gc.durable()).collect();
        for w in waits {
            futures_lite::future::block_on(w).unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..50).contains(&n), "50 writers took {n} flushes");
    }

    #[test]
    fn failed_flush_is_reported() {
        let gc = GroupCommit::start(Box::new(|| Err("disk on fire".into())));
        assert!(!gc.failed());
        assert!(futures_lite::future::block_on(gc.durable()).is_err());
        assert!(gc.failed(), "a failed flush is sticky");
    }
}
