//! Retries of an optimistic write that lost a race (the store answered
//! `Conflict`): the loser reads the new state and tries again.
//!
//! Writers that collide once collide again if they wait the same time, and
//! on several nodes an attempt that writes metadata files lasts tens of
//! milliseconds, so a fixed backoff livelocks them. Each wait is drawn
//! uniformly from a window that grows with the attempt number and scales
//! with how long the last attempt took ("full jitter"); the whole retry is
//! bounded by both a count and a deadline.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Most attempts one request makes.
const ATTEMPTS: u32 = 64;
/// No attempt starts this long after the first one did.
const DEADLINE: Duration = Duration::from_secs(10);
/// The shortest and longest attempt the window scales with.
const FLOOR: Duration = Duration::from_micros(100);
const CEILING: Duration = Duration::from_millis(50);
/// The window grows to `2^GROWTH` attempt times and stays there.
const GROWTH: u32 = 4;

/// One request's retries: `while retry.next().await { ... }` runs the first
/// attempt at once and each later one after a jittered wait.
pub(crate) struct Retry {
    first: Instant,
    started: Instant,
    attempt: u32,
}

impl Retry {
    pub(crate) fn new() -> Retry {
        let now = Instant::now();
        Retry { first: now, started: now, attempt: 0 }
    }

    /// Waits before the next attempt; false once the attempts or the
    /// deadline are spent.
    pub(crate) async fn next(&mut self) -> bool {
        if self.attempt > 0 {
            if self.attempt >= ATTEMPTS || self.first.elapsed() >= DEADLINE {
                return false;
            }
            glommio::timer::sleep(self.wait()).await;
        }
        self.attempt += 1;
        self.started = Instant::now();
        true
    }

    fn wait(&self) -> Duration {
        let took = self.started.elapsed().clamp(FLOOR, CEILING);
        let window = took * (1 << (self.attempt - 1).min(GROWTH));
        window.mul_f64(unit_random())
    }
}

/// A number in [0, 1) from a per-thread SplitMix64 stream, seeded from the
/// clock and the thread: writers on different shards and nodes draw
/// different waits.
fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn seed() -> u64 {
    let local = 0u8;
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    clock ^ ((&local as *const u8 as u64) << 17) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_units_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..1000).map(|_| unit_random()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!((350..650).contains(&low), "{low} of 1000 below 0.5");
    }

    #[test]
    fn attempts_are_bounded() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let mut retry = Retry::new();
                let mut attempts = 0;
                while retry.next().await {
                    attempts += 1;
                }
                assert_eq!(attempts, ATTEMPTS);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_window_scales_with_the_attempt_and_is_capped() {
        let mut r = Retry::new();
        r.attempt = 1;
        r.started = Instant::now() - Duration::from_millis(10);
        assert!(r.wait() <= Duration::from_millis(11));
        r.attempt = 30;
        r.started = Instant::now() - Duration::from_secs(5);
        assert!(r.wait() <= CEILING * (1 << GROWTH));
    }
}
