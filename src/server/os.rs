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

/// Descriptors kept out of the connection budget for the whole process:
/// stdio, the store's files, the metrics listener, logs.
const FIXED_FDS: u64 = 256;
/// Per shard: its listener, io_uring ring and eventfds, with headroom.
const SHARD_FDS: u64 = 16;
/// A warehouse write holds a file and its directory open at once.
const FDS_PER_WRITE: u64 = 2;

/// Connections each shard may hold so that `shards` shards, each running
/// `writes` warehouse writes and keeping `database` database connections,
/// stay within `nofile` descriptors.
pub fn connection_budget(nofile: u64, shards: usize, writes: usize, database: u64) -> u64 {
    let shards = shards.max(1) as u64;
    let reserve = FIXED_FDS + shards * (SHARD_FDS + writes as u64 * FDS_PER_WRITE + database);
    nofile.saturating_sub(reserve) / shards
}

/// Raises RLIMIT_NOFILE towards `connections` sockets and RLIMIT_MEMLOCK for
/// the io_uring rings of `shards` executors; fails with a clear message if
/// the kernel refuses what is needed. Returns the descriptor limit in force.
pub fn raise_limits(connections: u64, shards: usize, io_memory: usize) -> Result<u64, String> {
    let nofile =
        raise(libc::RLIMIT_NOFILE, connections).map_err(|e| format!("cannot read or raise RLIMIT_NOFILE: {e}"))?;
    if nofile < 1024 {
        return Err(format!("RLIMIT_NOFILE is {nofile}; at least 1024 open files are needed (raise with ulimit -n)"));
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
    Ok(nofile)
}

/// The CPUs this process may run on (its affinity mask, as `taskset` or a
/// cgroup set it), in ascending order.
pub fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: sched_getaffinity fills a stack cpu_set_t of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!("cannot read the CPU affinity mask: {}", std::io::Error::last_os_error()));
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect())
    }
}

/// Fails with the likely cause if the kernel refuses io_uring, before any
/// shard starts (a shard would otherwise die creating its ring with no more
/// than the OS error): container runtimes' default seccomp profiles and the
/// `kernel.io_uring_disabled` sysctl block it.
pub fn check_io_uring() -> Result<(), String> {
    // struct io_uring_params: 120 bytes, zeroed asks for the defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup writes into `params`, which is large enough.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: the ring's descriptor, ours to close.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EPERM) => "io_uring is not permitted (io_uring_setup: operation not permitted): a seccomp \
             profile blocks it (container runtimes' defaults do: use deploy/kubernetes/seccomp/bingsan-io-uring.json, \
             see docs/operations.md) or the sysctl kernel.io_uring_disabled is set"
            .to_string(),
        Some(libc::ENOSYS) => "this kernel has no io_uring (io_uring_setup: not implemented): Linux 5.8 or later is \
             needed, and a seccomp profile may hide it"
            .to_string(),
        _ => format!("cannot create an io_uring ring: {err}"),
    })
}

/// Fails if something already listens on `addr`. Shards bind with
/// SO_REUSEPORT, which would otherwise let a second server (same user) share
/// the port silently and take half the connections. A connection attempt
/// tells; a bind probe would not, as it also trips over TIME_WAIT sockets a
/// previous run left behind. A listener that is still there after
/// [`PORT_WAIT`] is another server's: the listener of a server that just died
/// lingers a moment while the kernel tears down its io_uring requests.
pub fn ensure_port_free(addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = std::time::Instant::now() + PORT_WAIT;
    while someone_listens(target) {
        if std::time::Instant::now() >= deadline {
            return Err(format!("cannot listen on {addr}: another process already listens there"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// How long [`ensure_port_free`] waits for a listener to go away.
const PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn someone_listens(target: std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(500)) {
        // A port in the ephemeral range can be picked as our own source
        // port: TCP then connects the socket to itself, with no listener.
        Ok(s) => s.local_addr().ok() != s.peer_addr().ok(),
        Err(_) => false,
    }
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

#[cfg(test)]
mod tests {
    use super::connection_budget;

    #[test]
    fn budget_leaves_room_for_writes_and_the_process() {
        // 20000 descriptors, 2 shards of 64 writes: 256 + 2 * (16 + 128) kept back.
        assert_eq!(connection_budget(20_000, 2, 64, 0), (20_000 - 544) / 2);
        assert_eq!(connection_budget(1024, 1, 64, 0), 1024 - 256 - 16 - 128);
        assert_eq!(connection_budget(1024, 1, 64, 8), 1024 - 256 - 16 - 128 - 8);
        // A limit smaller than the reserve leaves nothing, never wraps.
        assert_eq!(connection_budget(100, 4, 64, 0), 0);
    }
}
