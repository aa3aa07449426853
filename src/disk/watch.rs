//! The disk watcher thread (`bingsan-disk`): every [`INTERVAL`] it reads the
//! free space of the data directory's and the warehouse's filesystems, keeps
//! the write gate, re-creates the store's reserve once there is room, and
//! probes the warehouse after a failed write. Nothing here runs on a shard:
//! a slow `statvfs` delays the gate, never a request.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{state, Cause, DiskState, Reserve, Target};

/// How often the disks are checked: writes a full disk refuses pile up for at
/// most this long, so `--min-free-bytes` must cover what arrives meanwhile.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Checks between two probes of a warehouse whose last write failed: a
/// failing disk gets a probe write a second, not ten.
const PROBE_EVERY: u32 = 10;

/// What to watch.
pub struct WatchConfig {
    pub data_dir: PathBuf,
    /// Every local warehouse directory; object-store warehouses have none
    /// (no filesystem here to fill; their failures come from their requests).
    pub warehouses: Vec<PathBuf>,
    /// Writes are refused while a filesystem has less free space than this.
    pub min_free: u64,
}

/// The running watcher; dropping it stops the thread.
pub struct DiskWatch {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DiskWatch {
    /// Checks once, so the gate is right before any shard serves, then
    /// keeps checking on its own thread.
    pub fn start(config: WatchConfig, reserve: Reserve) -> io::Result<DiskWatch> {
        let mut watcher = Watcher { config, reserve, checks: 0 };
        watcher.check(state());
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new().name("bingsan-disk".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                watcher.check(state());
            }
        })?;
        Ok(DiskWatch { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One filesystem as `statvfs` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fs {
    /// Bytes an unprivileged writer may still use.
    pub avail: u64,
    pub read_only: bool,
}

fn stat(path: &Path) -> io::Result<Fs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Fs { avail: st.f_bavail.saturating_mul(st.f_frsize), read_only: st.f_flag & libc::ST_RDONLY != 0 })
}

/// Whether writes must be refused, and why: a filesystem that cannot be
/// read or is read-only, the store's reserve missing, or a filesystem below
/// the free-space floor. The store first: it is what a full disk breaks.
pub fn decide(
    store: Option<Fs>,
    warehouse: Option<Fs>,
    reserve_present: bool,
    min_free: u64,
) -> Option<(Target, Cause)> {
    let check = |target, fs: Option<Fs>, reserve_present: bool| match fs {
        None => Some((target, Cause::Io)),
        Some(fs) if fs.read_only => Some((target, Cause::ReadOnly)),
        Some(_) if !reserve_present => Some((target, Cause::NoSpace)),
        Some(fs) if fs.avail < min_free => Some((target, Cause::NoSpace)),
        Some(_) => None,
    };
    check(Target::Store, store, reserve_present).or_else(|| check(Target::Warehouse, warehouse, true))
}

/// The filesystem worse off: unreadable, then read-only, then the one with
/// less room.
fn worse(a: Option<Fs>, b: Option<Fs>) -> Option<Fs> {
    let rank = |fs: Option<Fs>| fs.map_or((0, 0), |f| if f.read_only { (1, 0) } else { (2, f.avail) });
    if rank(b) < rank(a) {
        b
    } else {
        a
    }
}

struct Watcher {
    config: WatchConfig,
    reserve: Reserve,
    /// Checks so far, to space out probes.
    checks: u32,
}

impl Watcher {
    fn check(&mut self, s: &DiskState) {
        let read = |target, path: &Path| {
            stat(path).inspect_err(|e| tracing::debug!(error = %e, ?target, "statvfs failed")).ok()
        };
        let store = read(Target::Store, &self.config.data_dir);
        s.set_free(Target::Store, store.map_or(0, |f| f.avail));
        // The warehouse worst off speaks for all. Without a local warehouse
        // the store's filesystem stands in: the store is checked first
        // against the same floor, so it adds nothing.
        let warehouse =
            self.config.warehouses.iter().map(|dir| read(Target::Warehouse, dir)).reduce(worse).unwrap_or(store);
        if !self.config.warehouses.is_empty() {
            s.set_free(Target::Warehouse, warehouse.map_or(0, |f| f.avail));
        }
        if !self.reserve.present()
            && store.is_some_and(|fs| !fs.read_only && fs.avail >= self.reserve.size() + self.config.min_free)
        {
            match self.reserve.create() {
                Ok(()) => tracing::info!(reserve_bytes = self.reserve.size(), "storage reserve re-created"),
                Err(e) => tracing::warn!(error = %e, "cannot re-create the storage reserve"),
            }
        }
        let gate = decide(store, warehouse, self.reserve.present(), self.config.min_free);
        if s.set_gate(gate) {
            match gate {
                Some((target, cause)) => tracing::warn!(
                    target = target.name(),
                    cause = cause.name(),
                    free_bytes = s.free(target),
                    min_free_bytes = self.config.min_free,
                    "writes refused: {}",
                    cause.message()
                ),
                None => tracing::info!("disks have room again: writes accepted"),
            }
        }
        self.checks = self.checks.wrapping_add(1);
        let probe_due = gate.is_none() && s.last_failure(Target::Warehouse).is_some() && self.checks % PROBE_EVERY == 0;
        if probe_due && !self.config.warehouses.is_empty() {
            // Every local warehouse must take a write again.
            match self.config.warehouses.iter().try_for_each(|dir| probe(dir)) {
                Ok(()) => {
                    tracing::info!("the warehouses take writes again");
                    s.succeeded(Target::Warehouse);
                }
                Err(e) => tracing::debug!(error = %e, "warehouse probe failed"),
            }
        }
    }
}

/// Writes and syncs a block to an unnamed file in `dir` (gone on close, so
/// it can clash with no table's files), or to a named one where the
/// filesystem has no unnamed files (FUSE, NFS): else a warehouse there would
/// never be seen writable again.
fn probe(dir: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(f) => write_block(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => probe_named(dir),
        Err(e) => Err(e),
    }
}

/// The probe through a hidden file of this process in the warehouse's root
/// (where no table keeps files), removed again; a crash's leftover is reused.
fn probe_named(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".bingsan-probe-{}", std::process::id()));
    let written = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path).and_then(write_block);
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

fn write_block(mut f: std::fs::File) -> io::Result<()> {
    f.write_all(&[0u8; 4096])?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn the_gate_names_the_first_fault() {
        let ok = Some(Fs { avail: 10 * MB, read_only: false });
        let low = Some(Fs { avail: MB / 2, read_only: false });
        let ro = Some(Fs { avail: 10 * MB, read_only: true });
        assert_eq!(decide(ok, ok, true, MB), None);
        assert_eq!(decide(low, ok, true, MB), Some((Target::Store, Cause::NoSpace)));
        assert_eq!(decide(ok, low, true, MB), Some((Target::Warehouse, Cause::NoSpace)));
        assert_eq!(decide(ok, ok, false, MB), Some((Target::Store, Cause::NoSpace)));
        assert_eq!(decide(ok, ro, true, MB), Some((Target::Warehouse, Cause::ReadOnly)));
        assert_eq!(decide(ro, low, false, MB), Some((Target::Store, Cause::ReadOnly)));
        assert_eq!(decide(None, ok, true, MB), Some((Target::Store, Cause::Io)));
        // Of several warehouses, the one worst off decides.
        assert_eq!([ok, low, ok].into_iter().reduce(worse).unwrap(), low);
        assert_eq!([low, ro, ok].into_iter().reduce(worse).unwrap(), ro);
        assert_eq!([ro, None, low].into_iter().reduce(worse).unwrap(), None);
    }

    #[test]
    fn reads_a_real_filesystem_and_probes_it() {
        let dir = std::env::temp_dir();
        let fs = stat(&dir).unwrap();
        assert!(!fs.read_only);
        probe(&dir).unwrap();
        assert!(stat(Path::new("/nonexistent/bingsan")).is_err());
    }

    #[test]
    fn the_named_probe_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("bingsan-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        probe_named(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(probe_named(&dir.join("missing")).is_err());
        std::fs::remove_dir(&dir).unwrap();
    }
}
