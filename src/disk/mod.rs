//! Disk faults: why a write to the store or the warehouse failed, what the
//! client and the operator see of it, and the watch that refuses writes
//! before a filling disk can hurt the store.
//!
//! sled stops writing for good after one failed log write (it keeps the
//! error until the store is reopened), so a full disk must never reach it:
//! the watcher (`watch.rs`) checks the free space of the data directory and
//! the warehouse and closes a gate below `--min-free-bytes`; mutations are
//! refused at the gate with a 503 and resume by themselves once space comes
//! back. A reserve file (`reserve.rs`) keeps room for the store to open on
//! a full disk (`open.rs`). See `docs/operations.md` for the runbook.

mod open;
mod reserve;
mod state;
mod watch;

pub use open::open_store;
pub use reserve::Reserve;
pub use state::{state, DiskState};
pub use watch::{DiskWatch, WatchConfig};

use std::io;

use crate::error::{ApiError, ErrorKind};

/// Why a write failed, for the metrics and the client's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    NoSpace,
    ReadOnly,
    Io,
    Timeout,
    /// The store's database server cannot be reached (PostgreSQL store).
    Unavailable,
}

impl Cause {
    pub const ALL: [Cause; 5] = [Cause::NoSpace, Cause::ReadOnly, Cause::Io, Cause::Timeout, Cause::Unavailable];

    /// The disk fault behind an I/O error: a full disk or quota, a
    /// read-only filesystem, a timeout, or another I/O error. `None` when
    /// the error is about the path rather than the disk (a file where a
    /// directory should be, a name that exists, permissions): a location a
    /// client chose must not raise disk alerts.
    pub fn of(e: &io::Error) -> Option<Cause> {
        use io::ErrorKind::*;
        match e.kind() {
            StorageFull | QuotaExceeded => Some(Cause::NoSpace),
            ReadOnlyFilesystem => Some(Cause::ReadOnly),
            TimedOut => Some(Cause::Timeout),
            NotFound | PermissionDenied | AlreadyExists | NotADirectory | IsADirectory | DirectoryNotEmpty
            | InvalidInput | InvalidFilename | Unsupported => None,
            _ => Some(Cause::Io),
        }
    }

    /// The cause of a sled failure (sled keeps the `io::Error` it hit);
    /// every path it touches is its own, so any failure is the disk's.
    pub fn of_sled(e: &sled::Error) -> Cause {
        match e {
            sled::Error::Io(e) => Cause::of(e).unwrap_or(Cause::Io),
            _ => Cause::Io,
        }
    }

    /// The `cause` label.
    pub fn name(self) -> &'static str {
        match self {
            Cause::NoSpace => "no_space",
            Cause::ReadOnly => "read_only",
            Cause::Io => "io_error",
            Cause::Timeout => "timeout",
            Cause::Unavailable => "unavailable",
        }
    }

    /// What a client is told: never a path, a descriptor or an OS message.
    pub fn message(self) -> &'static str {
        match self {
            Cause::NoSpace => "storage is full: writes are refused until space is freed; reads still work",
            Cause::ReadOnly => "storage is read-only: writes are refused; reads still work",
            Cause::Io => "storage I/O error: the write failed; reads still work",
            Cause::Timeout => "storage timed out: the write failed; reads still work",
            Cause::Unavailable => "the catalog database is unavailable; retry later",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Cause> {
        Cause::ALL.get((code as usize).checked_sub(1)?).copied()
    }
}

/// Where a write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The embedded store in the data directory.
    Store,
    /// Metadata files in the warehouse.
    Warehouse,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Store, Target::Warehouse];

    /// The `target` label.
    pub fn name(self) -> &'static str {
        match self {
            Target::Store => "store",
            Target::Warehouse => "warehouse",
        }
    }
}

/// A write that failed at `target`: counted on the running shard, kept for
/// `/health/writable` until a later write or probe succeeds, and answered
/// with a 503 that names only the cause.
pub fn write_failed(target: Target, cause: Cause) -> ApiError {
    state().failed(target, cause);
    refused(target, cause)
}

/// A store write that failed (its outcome unknown): recorded, counted and
/// answered with its cause.
pub fn store_write_failed(e: &crate::store::StoreError) -> ApiError {
    write_failed(Target::Store, e.cause().unwrap_or(Cause::Io))
}

/// Counts a write that did not happen and answers it.
fn refused(target: Target, cause: Cause) -> ApiError {
    crate::metrics::count_write_failure(target, cause);
    ApiError::new(ErrorKind::ServiceUnavailable, cause.message())
}

/// A write to `target` succeeded: it is writable again.
pub fn write_succeeded(target: Target) {
    state().succeeded(target);
}

/// Fails fast while the watcher holds the gate closed (a disk below its
/// free-space floor, read-only, or the store's reserve given up); counted
/// like a failed write.
pub fn check_writable() -> Result<(), ApiError> {
    match state().gate() {
        None => Ok(()),
        Some((target, cause)) => Err(refused(target, cause)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_the_error_kind() {
        let os = |code| Cause::of(&io::Error::from_raw_os_error(code));
        assert_eq!(os(libc::ENOSPC), Some(Cause::NoSpace));
        assert_eq!(os(libc::EDQUOT), Some(Cause::NoSpace));
        assert_eq!(os(libc::EROFS), Some(Cause::ReadOnly));
        assert_eq!(os(libc::ETIMEDOUT), Some(Cause::Timeout));
        assert_eq!(os(libc::EIO), Some(Cause::Io));
        assert_eq!(os(libc::ENOTDIR), None);
        assert_eq!(os(libc::EEXIST), None);
        assert_eq!(Cause::of_sled(&sled::Error::Io(io::Error::from_raw_os_error(libc::ENOTDIR))), Cause::Io);
        let sled_full = sled::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(Cause::of_sled(&sled_full), Cause::NoSpace);
        assert_eq!(Cause::of_sled(&sled::Error::Unsupported("x".into())), Cause::Io);
    }

    #[test]
    fn causes_round_trip_through_their_codes() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_code(c.code()), Some(c));
        }
        assert_eq!(Cause::from_code(0), None);
    }
}
