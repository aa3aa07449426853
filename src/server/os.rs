//! What the process asks of the kernel: file descriptors, locked memory for
//! io_uring, and signals delivered to one waiting thread.

/// Raises a resource limit to at least `want` (soft and hard as needed).
/// Returns the soft limit in force afterwards.
fn raise(resource: libc::__rlimit_resource_t, want: u64) -> Result<u64, String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a stack value.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        if lim.rlim_cur >= want {
            return Ok(lim.rlim_cur);
        }
        // Try to lift the hard limit too (works as root), else settle for it.
        let wanted = libc::rlimit { rlim_cur: want, rlim_max: want.max(lim.rlim_max) };
        if libc::setrlimit(resource, &wanted) == 0 {
            return Ok(want);
        }
        let capped = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if libc::setrlimit(resource, &capped) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(lim.rlim_max)
    }
}

/// Raises RLIMIT_NOFILE for `connections` sockets and RLIMIT_MEMLOCK for the
/// io_uring rings of `shards` executors; fails with a clear message if the
/// kernel refuses what is needed.
pub fn raise_limits(connections: u64, shards: usize, io_memory: usize) -> Result<(), String> {
    let nofile =
        raise(libc::RLIMIT_NOFILE, connections).map_err(|e| format!("cannot read or raise RLIMIT_NOFILE: {e}"))?;
    if nofile < 1024 {
        return Err(format!("RLIMIT_NOFILE is {nofile}; at least 1024 open files are needed (raise with ulimit -n)"));
    }
    if nofile < connections {
        tracing::warn!(nofile, wanted = connections, "RLIMIT_NOFILE below target; fewer concurrent connections fit");
    }
    // Registered buffers are pinned and count against RLIMIT_MEMLOCK (the
    // rings themselves are charged to the memory cgroup on current kernels).
    let memlock = (shards as u64) * (io_memory as u64 + (64 << 10));
    let got = raise(libc::RLIMIT_MEMLOCK, memlock).map_err(|e| format!("cannot read or raise RLIMIT_MEMLOCK: {e}"))?;
    if got < memlock {
        return Err(format!(
            "RLIMIT_MEMLOCK is {got} bytes but io_uring needs about {memlock} for {shards} shards; \
             raise it (ulimit -l) or run fewer shards"
        ));
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts later,
/// so only [`wait_for_signal`] sees them.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a stack value, then pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals; returns its number.
pub fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was filled by block_signals.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}
