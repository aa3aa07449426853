//! The server's CPU time (`--server-pid`), read from `/proc/<pid>/stat`
//! (user + system, every thread) at the end of warm-up and after the run,
//! and reported per operation.

use serde::Serialize;

/// CPU the server spent during the measured window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuReport {
    pub seconds: f64,
    /// `seconds` over the measured operations, in milliseconds.
    pub ms_per_op: Option<f64>,
}

impl CpuReport {
    pub fn new(before_s: f64, after_s: f64, ops: u64) -> CpuReport {
        let seconds = (after_s - before_s).max(0.0);
        CpuReport { seconds, ms_per_op: (ops > 0).then(|| seconds * 1e3 / ops as f64) }
    }
}

/// User + system CPU seconds of process `pid`, all threads.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| ticks as f64 / per_s as f64)
}

/// utime + stime (fields 14 and 15 of proc(5)), in clock ticks. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_user_plus_system() {
        let stat = "4242 (bingsan (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 70 0 0 20 0 3 0 100 1 1";
        assert_eq!(cpu_ticks(stat), Some(320));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let before = cpu_seconds(std::process::id()).expect("readable /proc/self/stat");
        // Busy until the clock-tick counters move (bounded, on a loaded box).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while cpu_seconds(std::process::id()).unwrap() <= before && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_seconds(std::process::id()).unwrap() > before);
    }

    #[test]
    fn per_operation_in_milliseconds() {
        let r = CpuReport::new(10.0, 12.5, 500);
        assert_eq!((r.seconds, r.ms_per_op), (2.5, Some(5.0)));
        assert_eq!(CpuReport::new(1.0, 1.0, 0).ms_per_op, None);
        assert_eq!(CpuReport::new(2.0, 1.0, 10).seconds, 0.0, "never negative");
    }
}
