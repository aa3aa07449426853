//! Real syncs of the files sled writes.
//!
//! sled 0.34 makes its log "durable" with `sync_file_range(2)`, which
//! flushes neither the file's metadata (its size) nor the disk's write
//! cache, writes blobs without any sync, and renames snapshots without
//! syncing the directory. After each sled flush, `SledFiles::sync` makes it
//! true, data before the pointers to it:
//! - `blobs/<lsn>`, values too large for the log (more than a quarter of a
//!   512 KiB segment): each new blob once it is complete, then `blobs/`;
//! - `db`, the log (every segment lives in this one file): `fdatasync`;
//! - the data directory itself when its entries changed (a snapshot
//!   `snap.*` renamed into place, an old one removed).
//!
//! On open everything is synced once: `conf` (sled writes it without a
//! sync), `db`, both directories and the data directory's parent. Before
//! sled opens, `discard_incomplete_snapshots` removes what an interrupted
//! start left behind.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A blob file: CRC32 (little endian) of what follows, a kind byte, data.
const BLOB_CRC_LEN: usize = 4;

pub struct SledFiles {
    path: PathBuf,
    blobs: PathBuf,
    log: File,
    dir: File,
    blobs_dir: File,
    /// Names in the data directory when it was last synced.
    entries: Vec<OsString>,
    /// Blobs synced complete; a blob is written once, so once is enough.
    synced_blobs: HashSet<OsString>,
}

impl SledFiles {
    /// Opens the files of the sled database in `dir` (already opened by
    /// sled) and syncs all of them once.
    pub fn open(dir: &Path) -> io::Result<SledFiles> {
        let blobs = dir.join("blobs");
        let mut files = SledFiles {
            log: File::open(dir.join("db"))?,
            dir: File::open(dir)?,
            blobs_dir: File::open(&blobs)?,
            blobs,
            path: dir.to_path_buf(),
            entries: Vec::new(),
            synced_blobs: HashSet::new(),
        };
        match File::open(dir.join("conf")) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        files.log.sync_all()?;
        // Syncs the data directory too: its remembered entries start empty.
        files.sync()?;
        files.blobs_dir.sync_all()?;
        if let Some(parent) = std::fs::canonicalize(dir)?.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(files)
    }

    /// Makes everything sled flushed so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.sync_blobs()?;
        self.log.sync_data()?;
        let mut entries = names(&self.path)?;
        entries.sort_unstable();
        if entries != self.entries {
            self.dir.sync_all()?;
            self.entries = entries;
        }
        Ok(())
    }

    /// Syncs every complete blob not synced yet, then `blobs/` if any was.
    ///
    /// sled writes a blob whole before the log record that points to it can
    /// reach the file, so after sled's flush every blob the flushed log
    /// needs is complete.
    /// One still being written (for a later batch) is left alone until its
    /// CRC matches: a partial blob made durable would read as a torn log
    /// after a crash, and sled would drop every record after it.
    fn sync_blobs(&mut self) -> io::Result<()> {
        let present = names(&self.blobs)?;
        let mut synced_any = false;
        for name in &present {
            if self.synced_blobs.contains(name) {
                continue;
            }
            let mut file = match File::open(self.blobs.join(name)) {
                Ok(f) => f,
                // Removed by sled meanwhile: nothing needs it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // Megabytes to read and sync (a big table's record) on a shard's
            // core: a slice per system call.
            if let Some(len) = complete_blob(&mut file)? {
                crate::bulk::sync_data(&file, len)?;
                synced_any = true;
                self.synced_blobs.insert(name.clone());
            }
        }
        if synced_any {
            self.blobs_dir.sync_all()?;
        }
        // Forget blobs sled removed, so the set stays as small as the directory.
        if self.synced_blobs.len() > present.len() {
            let present: HashSet<&OsString> = present.iter().collect();
            self.synced_blobs.retain(|n| present.contains(n));
        }
        Ok(())
    }
}

/// Removes `snap.<lsn>.generating` files from `dir`, with a log line each.
///
/// sled writes a snapshot under that name, syncs it and renames it; one left
/// behind is incomplete by definition (a start interrupted by a crash or a
/// full disk). sled would read it as the newest snapshot and refuse every
/// later start as corrupt, while the log and any complete snapshot hold all
/// it would have held.
pub fn discard_incomplete_snapshots(dir: &Path) -> io::Result<()> {
    let entries = match names(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut removed = false;
    for name in entries {
        let text = name.to_string_lossy();
        if text.starts_with("snap.") && text.ends_with(".generating") {
            tracing::warn!(file = %text, "discarding an incomplete store snapshot left by an interrupted start");
            std::fs::remove_file(dir.join(&name))?;
            removed = true;
        }
    }
    if removed {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn names(dir: &Path) -> io::Result<Vec<OsString>> {
    std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect()
}

/// The length of a blob file that holds all its bytes (its CRC matches its
/// content), or `None`. Read a slice at a time: a blob is megabytes (a big
/// table's record), and this thread shares a shard's core (`bulk::sync_data`).
fn complete_blob(file: &mut File) -> io::Result<Option<u64>> {
    let mut crc = [0; BLOB_CRC_LEN];
    match file.read_exact(&mut crc) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut slice = vec![0; crate::bulk::SLICE];
    let mut len = BLOB_CRC_LEN as u64;
    loop {
        let n = match file.read(&mut slice) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&slice[..n]);
        len += n as u64;
    }
    let complete = len > BLOB_CRC_LEN as u64 && hasher.finalize().to_le_bytes() == crc;
    Ok(complete.then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_counts_as_complete_only_when_its_crc_matches() {
        let dir = std::env::temp_dir().join(format!("bingsan-blob-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("7");
        // Small, and over several of the slices it is read in.
        for body in [b"\x01some value bytes".to_vec(), (0..3 * crate::bulk::SLICE + 17).map(|i| i as u8).collect()] {
            let mut whole = crc32fast::hash(&body).to_le_bytes().to_vec();
            whole.extend_from_slice(&body);
            let n = whole.len();
            for (len, want) in [(0, None), (4, None), (n - 1, None), (n, Some(n as u64))] {
                std::fs::write(&path, &whole[..len]).unwrap();
                assert_eq!(complete_blob(&mut File::open(&path).unwrap()).unwrap(), want, "{len} bytes");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn large_values_become_blobs_that_are_synced() {
        let dir = std::env::temp_dir().join(format!("bingsan-sledfiles-{}", uuid::Uuid::new_v4()));
        let db = sled::Config::new().path(&dir).open().unwrap();
        let mut files = SledFiles::open(&dir).unwrap();
        db.insert(b"big", vec![7u8; 1 << 20]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        assert_eq!(files.synced_blobs.len(), 1, "a 1 MiB value is one complete blob");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
