//! The store's reserve: a file of allocated blocks in the data directory,
//! given back when the store cannot open on a full disk (sled writes a
//! snapshot while opening), so a restart on a full disk still serves.
//! Re-created by the watcher once the disk has room again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Its name in the data directory (sled owns `db`, `conf`, `snap.*`, `blobs/`).
pub const FILE: &str = "bingsan.reserve";

/// See the module documentation. A size of 0 turns the reserve off.
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    pub fn new(data_dir: &Path, size: u64) -> Reserve {
        Reserve { path: data_dir.join(FILE), size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the reserve holds its full size (always, when turned off).
    pub fn present(&self) -> bool {
        self.size == 0 || std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size)
    }

    /// Allocates the reserve; on failure nothing of it is left.
    pub fn create(&self) -> io::Result<()> {
        if self.present() {
            return Ok(());
        }
        let made = OpenOptions::new().write(true).create(true).truncate(true).open(&self.path).and_then(|f| {
            allocate(&f, self.size)?;
            f.sync_all()
        });
        if made.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        made
    }

    /// Gives the reserve's space back; whether there was any to give.
    pub fn release(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(self.size > 0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Allocates `size` bytes of blocks: `fallocate`, or zeros written where the
/// filesystem does not support it (a sparse file would reserve nothing).
fn allocate(f: &File, size: u64) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor `f` owns.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    let zeros = [0u8; 64 * 1024];
    let mut w = f;
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        w.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_release_and_off() {
        let dir = std::env::temp_dir().join(format!("bingsan-reserve-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Reserve::new(&dir, 1 << 20);
        assert!(!r.present());
        r.create().unwrap();
        assert!(r.present());
        assert_eq!(std::fs::metadata(dir.join(FILE)).unwrap().len(), 1 << 20);
        assert!(r.release().unwrap());
        assert!(!r.present());
        assert!(!r.release().unwrap());
        let off = Reserve::new(&dir, 0);
        assert!(off.present());
        off.create().unwrap();
        assert!(!dir.join(FILE).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
