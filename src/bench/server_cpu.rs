//! The server's CPU time (`--server-pid`), read from `/proc/<pid>/stat`
//! (user + system, every thread), and its threads' context switches, from
//! `/proc/<pid>/task/*/status`, at the end of warm-up and after the run,
//! and reported per operation. Switches per operation show hand-offs
//! between the server's threads (a shard and its blocking thread, the
//! group-commit thread, io_uring workers) that CPU time alone hides.

use serde::Serialize;

/// CPU the server spent during the measured window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuReport {
    pub seconds: f64,
    /// `seconds` over the measured operations, in milliseconds.
    pub ms_per_op: Option<f64>,
    /// Context switches of the server's threads over the measured operations.
    pub switches_per_op: Option<f64>,
}

/// What the server had used at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    /// Voluntary and involuntary, summed over the threads alive then.
    pub switches: u64,
}

impl CpuReport {
    pub fn new(before: Usage, after: Usage, ops: u64) -> CpuReport {
        let seconds = (after.cpu_s - before.cpu_s).max(0.0);
        let switches = after.switches.saturating_sub(before.switches) as f64;
        CpuReport {
            seconds,
            ms_per_op: (ops > 0).then(|| seconds * 1e3 / ops as f64),
            switches_per_op: (ops > 0).then(|| switches / ops as f64),
        }
    }
}

/// CPU seconds (user + system) and context switches of process `pid`, all threads.
pub fn usage(pid: u32) -> Option<Usage> {
    let ticks = cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let switches = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|status| switches(&status))
        .sum();
    (per_s > 0).then(|| Usage { cpu_s: ticks as f64 / per_s as f64, switches })
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a thread's status.
fn switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
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
    fn this_process_has_spent_some_cpu_and_switched() {
        let cpu = || usage(std::process::id()).expect("readable /proc/self").cpu_s;
        let before = usage(std::process::id()).expect("readable /proc/self");
        // Busy until the clock-tick counters move (bounded, on a loaded box).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while cpu() <= before.cpu_s && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // The process's sum drops when other tests' threads end: this
        // thread's own count is the one a sleep surely raises.
        let own = || switches(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
        let own_before = own();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = usage(std::process::id()).unwrap();
        assert!(after.cpu_s > before.cpu_s);
        assert!(after.switches > 0);
        assert!(own() > own_before, "a sleep is a voluntary switch");
    }

    #[test]
    fn switches_sum_both_kinds() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches(status), 127);
        assert_eq!(switches("Name:\tx\n"), 0);
    }

    #[test]
    fn per_operation_in_milliseconds_and_switches() {
        let at = |cpu_s, switches| Usage { cpu_s, switches };
        let r = CpuReport::new(at(10.0, 100), at(12.5, 1100), 500);
        assert_eq!((r.seconds, r.ms_per_op, r.switches_per_op), (2.5, Some(5.0), Some(2.0)));
        assert_eq!(CpuReport::new(at(1.0, 0), at(1.0, 0), 0).ms_per_op, None);
        assert_eq!(CpuReport::new(at(2.0, 5), at(1.0, 1), 10).seconds, 0.0, "never negative");
        assert_eq!(CpuReport::new(at(2.0, 5), at(1.0, 1), 10).switches_per_op, Some(0.0));
    }
}
