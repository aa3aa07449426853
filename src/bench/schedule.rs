//! When requests are sent: the run's phases, and the open-loop schedule that
//! keeps coordinated omission from hiding server stalls.

use std::time::{Duration, Instant};

/// Warm-up then measurement, shared by every connection of the run.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    pub start: Instant,
    pub warmup_end: Instant,
    pub end: Instant,
}

impl Phases {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Phases {
        Phases { start, warmup_end: start + warmup, end: start + warmup + duration }
    }

    /// Whether an operation that began (or was scheduled) at `t` is recorded.
    pub fn measured(&self, t: Instant) -> bool {
        t >= self.warmup_end && t < self.end
    }
}

/// One connection's share of an open-loop schedule.
///
/// The total rate R is split evenly over C connections: each sends every C/R
/// seconds, and connection i is offset by i/R so the combined stream is evenly
/// spaced. Request k of connection i is due at start + i/R + k*C/R. A
/// connection that falls behind sends late requests immediately, and their
/// latency still counts from the due time.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    offset_ns: f64,
    interval_ns: f64,
}

impl OpenLoop {
    pub fn new(rate: f64, connections: usize, conn_index: usize) -> OpenLoop {
        OpenLoop { offset_ns: conn_index as f64 * 1e9 / rate, interval_ns: connections as f64 * 1e9 / rate }
    }

    /// Due time of request `k`, relative to the start of the run.
    pub fn due(&self, k: u64) -> Duration {
        // Computed from k each time (not accumulated) so rounding never drifts.
        Duration::from_nanos((self.offset_ns + k as f64 * self.interval_ns) as u64)
    }
}

/// Latency as the user sees it: from when the request should have been sent.
pub fn latency_since(due: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kth_request_is_offset_plus_k_intervals() {
        // 1000 req/s over 10 connections: each connection every 10 ms.
        let s = OpenLoop::new(1000.0, 10, 3);
        assert_eq!(s.due(0), Duration::from_millis(3));
        assert_eq!(s.due(5), Duration::from_millis(53));
        assert_eq!(s.due(100_000), Duration::from_millis(1_000_003));
    }

    #[test]
    fn connections_interleave_into_an_even_stream() {
        let (rate, conns) = (2000.0, 7);
        let mut all: Vec<Duration> = (0..conns)
            .flat_map(|i| {
                let s = OpenLoop::new(rate, conns, i);
                (0..50).map(move |k| s.due(k))
            })
            .collect();
        all.sort();
        for w in all.windows(2) {
            let gap = (w[1] - w[0]).as_nanos() as i64;
            assert!((gap - 500_000).abs() <= 1, "gap {gap}");
        }
    }

    #[test]
    fn latency_counts_from_due_time() {
        let start = Instant::now();
        let s = OpenLoop::new(100.0, 1, 0);
        let due = start + s.due(2); // 20 ms
                                    // Sent late (at 35 ms) because the connection was stalled, done at 40 ms.
        let done = start + Duration::from_millis(40);
        assert_eq!(latency_since(due, done), Duration::from_millis(20));
        assert_eq!(latency_since(done, due), Duration::ZERO);
    }

    #[test]
    fn phases_record_only_after_warmup() {
        let start = Instant::now();
        let p = Phases::new(start, Duration::from_secs(2), Duration::from_secs(10));
        assert!(!p.measured(start + Duration::from_secs(1)));
        assert!(p.measured(start + Duration::from_secs(2)));
        assert!(!p.measured(start + Duration::from_secs(12)));
    }
}
