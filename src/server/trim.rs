//! Gives memory back to the OS after a connection spike.
//!
//! glibc keeps freed heap memory in its arenas: after 10,000 connections
//! closed, RSS stayed at its peak. A helper thread watches the open
//! connection count and, once it has fallen well below its peak and stayed
//! there, calls `malloc_trim(0)`, which returns the free pages of every
//! arena. It runs off the shards, and only after a fall, so the request
//! path pays nothing (an allocator swap would change every allocation's
//! cost to fix a rare event).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::ShardStats;

/// How often the connection count is read.
const INTERVAL: Duration = Duration::from_secs(1);
/// A fall from the peak worth trimming for (each idle connection held
/// about 1 KiB at its peak, request state more while busy).
const FALL: u64 = 256;
/// How long the count must stay down, so a trim does not race a reconnect
/// storm that would allocate it all again.
const SETTLE: Duration = Duration::from_secs(5);

/// When to trim, from successive connection counts.
#[derive(Debug, Default)]
pub struct TrimPolicy {
    peak: u64,
    low_since: Option<Instant>,
}

impl TrimPolicy {
    /// Notes `open` connections at `now`; true when it is time to trim.
    pub fn observe(&mut self, open: u64, now: Instant) -> bool {
        self.peak = self.peak.max(open);
        if self.peak < open + FALL {
            self.low_since = None;
            return false;
        }
        let since = *self.low_since.get_or_insert(now);
        if now.duration_since(since) < SETTLE {
            return false;
        }
        (self.peak, self.low_since) = (open, None);
        true
    }
}

/// The running trimmer; dropping it stops the thread.
pub struct Trimmer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Trimmer {
    pub fn start(stats: Vec<Arc<ShardStats>>) -> std::io::Result<Trimmer> {
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new().name("bingsan-trim".into()).spawn(move || {
            let mut policy = TrimPolicy::default();
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                let open = stats.iter().map(|s| s.connections.load(Relaxed)).sum();
                if policy.observe(open, Instant::now()) {
                    // SAFETY: malloc_trim only walks the allocator's own state.
                    unsafe { libc::malloc_trim(0) };
                    tracing::debug!(open, "returned free heap memory after connections closed");
                }
            }
        })?;
        Ok(Trimmer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_lasting_fall() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = TrimPolicy::default();
        assert!(!p.observe(10_000, at(0)));
        assert!(!p.observe(10, at(1)), "the fall must last");
        assert!(!p.observe(12, at(5)));
        assert!(p.observe(12, at(6)), "5 s down: trim");
        assert!(!p.observe(12, at(20)), "once per fall");
    }

    #[test]
    fn a_rebound_or_a_small_fall_does_not_trim() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = TrimPolicy::default();
        p.observe(1_000, at(0));
        p.observe(100, at(1));
        assert!(!p.observe(900, at(3)), "back near the peak");
        assert!(!p.observe(900, at(30)));
        assert!(!p.observe(800, at(40)), "a fall smaller than FALL");
        assert!(!p.observe(800, at(60)));
    }
}
