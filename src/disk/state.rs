//! What the process knows about its disks, shared by every thread: the
//! watcher writes the gate and the free space, shards record failed and
//! successful writes, `/health/writable` and the metrics thread read.
//!
//! One per process (the disks are the process's), as plain atomics: the
//! gate is read on every mutation and must cost no more than a load.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::{Cause, Target};

/// See the module documentation.
pub struct DiskState {
    /// 0: writes may go; else the target and cause the watcher refuses for.
    gate: AtomicU8,
    /// Per target: 0, or the cause of its last failed write.
    failed: [AtomicU8; 2],
    /// Per target: free bytes at the last check (`u64::MAX` before one).
    free: [AtomicU64; 2],
}

static STATE: DiskState = DiskState::new();

/// The process's disk state.
pub fn state() -> &'static DiskState {
    &STATE
}

fn encode(target: Target, cause: Cause) -> u8 {
    (target as u8) << 4 | cause.code()
}

fn decode(v: u8) -> Option<(Target, Cause)> {
    Some((Target::ALL[(v >> 4) as usize & 1], Cause::from_code(v & 0xf)?))
}

impl DiskState {
    pub const fn new() -> DiskState {
        DiskState {
            gate: AtomicU8::new(0),
            failed: [AtomicU8::new(0), AtomicU8::new(0)],
            free: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
        }
    }

    /// Why writes are refused before they start, if they are.
    pub fn gate(&self) -> Option<(Target, Cause)> {
        decode(self.gate.load(Ordering::Acquire))
    }

    /// Opens (`None`) or closes the gate; returns whether it changed.
    pub fn set_gate(&self, why: Option<(Target, Cause)>) -> bool {
        let v = why.map_or(0, |(t, c)| encode(t, c));
        self.gate.swap(v, Ordering::AcqRel) != v
    }

    pub fn failed(&self, target: Target, cause: Cause) {
        self.failed[target as usize].store(cause.code(), Ordering::Release);
    }

    /// Clears a recorded failure; a load first, so the common case (nothing
    /// failed) does not write a line every shard shares.
    pub fn succeeded(&self, target: Target) {
        let slot = &self.failed[target as usize];
        if slot.load(Ordering::Acquire) != 0 {
            slot.store(0, Ordering::Release);
        }
    }

    /// The cause of `target`'s last failed write, until one succeeds.
    pub fn last_failure(&self, target: Target) -> Option<Cause> {
        Cause::from_code(self.failed[target as usize].load(Ordering::Acquire))
    }

    /// Why writes would fail now: the gate, else a target's last failure.
    pub fn unwritable(&self) -> Option<(Target, Cause)> {
        self.gate().or_else(|| Target::ALL.into_iter().find_map(|t| self.last_failure(t).map(|c| (t, c))))
    }

    pub fn set_free(&self, target: Target, bytes: u64) {
        self.free[target as usize].store(bytes, Ordering::Relaxed);
    }

    /// Free bytes at the last check, `None` before the first.
    pub fn free(&self, target: Target) -> Option<u64> {
        Some(self.free[target as usize].load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }
}

impl Default for DiskState {
    fn default() -> Self {
        DiskState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_then_failures_then_writable() {
        let s = DiskState::new();
        assert_eq!(s.unwritable(), None);
        s.failed(Target::Warehouse, Cause::Io);
        assert_eq!(s.unwritable(), Some((Target::Warehouse, Cause::Io)));
        assert!(s.set_gate(Some((Target::Store, Cause::ReadOnly))));
        assert!(!s.set_gate(Some((Target::Store, Cause::ReadOnly))));
        assert_eq!(s.unwritable(), Some((Target::Store, Cause::ReadOnly)));
        assert!(s.set_gate(None));
        s.succeeded(Target::Warehouse);
        assert_eq!(s.unwritable(), None);
        for t in Target::ALL {
            for c in Cause::ALL {
                assert_eq!(decode(encode(t, c)), Some((t, c)));
            }
        }
    }
}
