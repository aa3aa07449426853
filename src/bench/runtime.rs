//! Process setup shared by the generator and the static server: which CPUs
//! shards run on, file-descriptor limits, and starting a pinned glommio
//! executor on its own thread with errors that say what to fix.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use glommio::{LocalExecutorBuilder, Placement};

/// Registered io_uring buffer memory per executor. Only file DMA uses it and
/// neither the generator nor the static server reads files, so the minimum
/// keeps us far below the default 8 MiB RLIMIT_MEMLOCK (glommio's own default,
/// 10 MiB, would not fit).
const IO_MEMORY: usize = 64 << 10;

/// CPUs this process may run on (its affinity mask), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for pid 0
    // (this thread) and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            return (0..n).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// The CPU of each shard: `shards` (default: one per CPU) over `cpus`
/// (default: all allowed), round-robin.
pub fn shard_cpus(shards: Option<usize>, cpus: Option<&[usize]>) -> io::Result<Vec<usize>> {
    let cpus = match cpus {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => allowed_cpus(),
    };
    let allowed = allowed_cpus();
    if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {bad} is not available to this process (allowed: {allowed:?})"),
        ));
    }
    let shards = shards.unwrap_or(cpus.len());
    if shards == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "--shards must be at least 1"));
    }
    Ok((0..shards).map(|i| cpus[i % cpus.len()]).collect())
}

/// Makes sure at least `needed` file descriptors can be open, raising the
/// soft (and if allowed, hard) RLIMIT_NOFILE. Returns the resulting limit.
pub fn raise_nofile(needed: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    let want = libc::rlimit { rlim_cur: needed, rlim_max: lim.rlim_max.max(needed) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(needed);
    }
    Err(io::Error::other(format!(
        "need {needed} open files but RLIMIT_NOFILE is {} (hard {}) and raising it failed: {}; \
         raise it (ulimit -n / LimitNOFILE=) or use fewer connections",
        lim.rlim_cur,
        lim.rlim_max,
        io::Error::last_os_error()
    )))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, for servers that cannot
/// know how many clients will come.
pub fn raise_nofile_to_hard() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as above.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sets `failed` if the shard thread unwinds, so peers waiting on it stop.
struct PanicFlag(Arc<AtomicBool>);

impl Drop for PanicFlag {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `work` on a new thread inside a glommio executor pinned to `cpu`.
/// If the executor cannot start or the shard panics, `failed` is set.
pub fn spawn_shard<T, F, Fut>(
    name: String,
    cpu: usize,
    failed: Arc<AtomicBool>,
    work: F,
) -> io::Result<JoinHandle<io::Result<T>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let _flag = PanicFlag(failed.clone());
        let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&name)
            .io_memory(IO_MEMORY)
            .ring_depth(crate::uring::RING_DEPTH)
            .make()
            .map_err(|e| {
                failed.store(true, Ordering::SeqCst);
                io::Error::other(format!(
                    "{name}: cannot start a glommio executor on cpu {cpu}: {e} \
                     (io_uring needs RLIMIT_MEMLOCK >= 512 KiB; see ulimit -l)"
                ))
            })?;
        Ok(executor.run(work()))
    })
}

/// Joins shard threads, turning a panic into an error.
/// Puts the calling thread under `SCHED_IDLE`: the writers' shard of a
/// mixed run, which shares the first CPU with a reader shard. Its parse of a
/// 5.9 MB commit answer ran for milliseconds at a time at the readers'
/// priority, and a reader woken meanwhile waited (up to 4 ms measured with
/// `perf sched timehist`), which the readers' latency then counted as the
/// server's. Under `SCHED_IDLE` a woken reader preempts it at once.
pub fn yield_cpu_to_readers() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; 0 names the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn join<T>(handle: JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle.join().map_err(|_| io::Error::other("a shard thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_round_robin_over_cpus() {
        let first = allowed_cpus()[0];
        assert_eq!(shard_cpus(Some(3), Some(&[first])).unwrap(), [first; 3]);
        assert_eq!(shard_cpus(None, None).unwrap(), allowed_cpus());
        assert!(shard_cpus(Some(0), None).is_err());
        assert!(shard_cpus(None, Some(&[100_000])).is_err());
    }

    #[test]
    fn nofile_already_enough() {
        assert!(raise_nofile(16).unwrap() >= 16);
    }

    #[test]
    fn executor_starts_here() {
        let failed = Arc::new(AtomicBool::new(false));
        let h = spawn_shard("bench-test".into(), allowed_cpus()[0], failed.clone(), || async {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            7
        })
        .unwrap();
        assert_eq!(join(h).unwrap(), 7);
        assert!(!failed.load(Ordering::SeqCst));
    }
}
