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
//! sled unlinks a blob whose record was replaced as soon as it deems the
//! replacing log segment stable, i.e. after its `sync_file_range`, before
//! our `fdatasync` of the log. A power cut in between would leave the old,
//! acknowledged record pointing at no file (sled's recovery skips such a
//! record, so the page falls back to an older state). So every synced blob
//! also has a hard link in `blobs-held/`, removed only once a log sync
//! covers the unlink; `restore_held_blobs` links back, before sled opens,
//! what a crash caught in between.
//!
//! On open everything is synced once: `conf` (sled writes it without a
//! sync), `db`, the directories and the data directory's parent. Before
//! sled opens, `discard_incomplete_snapshots` removes what an interrupted
//! start left behind.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A blob file: CRC32 (little endian) of what follows, a kind byte, data.
const BLOB_CRC_LEN: usize = 4;
/// Beside `blobs/` in the data directory: a hard link to every synced blob
/// until sled's removal of it is covered by a log sync.
const HELD: &str = "blobs-held";

pub struct SledFiles {
    path: PathBuf,
    blobs: PathBuf,
    held: PathBuf,
    log: File,
    dir: File,
    blobs_dir: File,
    held_dir: File,
    /// Names in the data directory when it was last synced.
    entries: Vec<OsString>,
    /// Blobs synced complete and held; a blob is written once, so once is enough.
    synced_blobs: HashSet<OsString>,
}

impl SledFiles {
    /// Opens the files of the sled database in `dir` (already opened by
    /// sled) and syncs all of them once.
    pub fn open(dir: &Path) -> io::Result<SledFiles> {
        let blobs = dir.join("blobs");
        let held = dir.join(HELD);
        std::fs::create_dir_all(&held)?;
        let mut files = SledFiles {
            log: File::open(dir.join("db"))?,
            dir: File::open(dir)?,
            blobs_dir: File::open(&blobs)?,
            held_dir: File::open(&held)?,
            // Held blobs were synced before they were linked; those sled
            // removed at its recovery are released by the first sync.
            synced_blobs: names(&held)?.into_iter().collect(),
            blobs,
            held,
            path: dir.to_path_buf(),
            entries: Vec::new(),
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
        files.held_dir.sync_all()?;
        if let Some(parent) = std::fs::canonicalize(dir)?.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(files)
    }

    /// Makes everything sled flushed so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        let removed = self.sync_blobs()?;
        self.log.sync_data()?;
        // sled unlinked these before the log sync above, hence after it
        // wrote the records that replace them: nothing durable needs them.
        for name in &removed {
            match std::fs::remove_file(self.held.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.synced_blobs.remove(name);
        }
        let mut entries = names(&self.path)?;
        entries.sort_unstable();
        if entries != self.entries {
            self.dir.sync_all()?;
            self.entries = entries;
        }
        Ok(())
    }

    /// Syncs and holds every complete blob not synced yet, then `blobs/`
    /// and `blobs-held/` if any was; returns the held blobs sled removed.
    ///
    /// sled writes a blob whole before the log record that points to it can
    /// reach the file, so after sled's flush every blob the flushed log
    /// needs is complete.
    /// One still being written (for a later batch) is left alone until its
    /// CRC matches: a partial blob made durable would read as a torn log
    /// after a crash, and sled would drop every record after it.
    fn sync_blobs(&mut self) -> io::Result<Vec<OsString>> {
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
            if complete_blob(&mut file)? {
                file.sync_data()?;
                match std::fs::hard_link(self.blobs.join(name), self.held.join(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    // Removed by sled meanwhile: it replaced the blob before any sync acknowledged it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
                self.synced_blobs.insert(name.clone());
            }
        }
        if synced_any {
            self.blobs_dir.sync_all()?;
            self.held_dir.sync_all()?;
        }
        let present: HashSet<&OsString> = present.iter().collect();
        Ok(self.synced_blobs.iter().filter(|n| !present.contains(n)).cloned().collect())
    }
}

/// Links back into `blobs/` every held blob missing there, with a log line:
/// sled removed it after a crash caught its replacement unsynced, and the
/// record that needs it is what the log holds. Runs before sled opens.
pub fn restore_held_blobs(dir: &Path) -> io::Result<()> {
    let held = dir.join(HELD);
    let names = match names(&held) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let blobs = dir.join("blobs");
    let mut restored = 0;
    for name in names {
        match std::fs::hard_link(held.join(&name), blobs.join(&name)) {
            Ok(()) => restored += 1,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if restored > 0 {
        tracing::warn!(blobs = restored, "restored store blobs removed after their replacement was last synced");
        File::open(&blobs)?.sync_all()?;
    }
    Ok(())
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

/// Whether a blob file holds all its bytes: its CRC matches its content.
fn complete_blob(file: &mut File) -> io::Result<bool> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if bytes.len() <= BLOB_CRC_LEN {
        return Ok(false);
    }
    let (crc, rest) = bytes.split_at(BLOB_CRC_LEN);
    Ok(crc32fast::hash(rest).to_le_bytes() == crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_counts_as_complete_only_when_its_crc_matches() {
        let dir = std::env::temp_dir().join(format!("bingsan-blob-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("7");
        let body = b"\x01some value bytes";
        let mut whole = crc32fast::hash(body).to_le_bytes().to_vec();
        whole.extend_from_slice(body);
        for (len, want) in [(0, false), (4, false), (whole.len() - 1, false), (whole.len(), true)] {
            std::fs::write(&path, &whole[..len]).unwrap();
            assert_eq!(complete_blob(&mut File::open(&path).unwrap()).unwrap(), want, "{len} bytes");
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

    #[test]
    fn a_removed_blob_stays_held_until_a_log_sync_covers_the_removal() {
        let dir = std::env::temp_dir().join(format!("bingsan-heldblobs-{}", uuid::Uuid::new_v4()));
        let db = sled::Config::new().path(&dir).open().unwrap();
        let mut files = SledFiles::open(&dir).unwrap();
        db.insert(b"big", vec![7u8; 1 << 20]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        let blob = names(&dir.join("blobs")).unwrap();
        assert_eq!(names(&dir.join(HELD)).unwrap(), blob, "a synced blob is held");
        // sled removes the blob; a crash before the next sync: the restart links it back.
        std::fs::remove_file(dir.join("blobs").join(&blob[0])).unwrap();
        restore_held_blobs(&dir).unwrap();
        assert_eq!(names(&dir.join("blobs")).unwrap(), blob, "the held blob is restored");
        // sled removes it again; this time a sync covers the removal and releases it.
        std::fs::remove_file(dir.join("blobs").join(&blob[0])).unwrap();
        files.sync().unwrap();
        assert!(names(&dir.join(HELD)).unwrap().is_empty(), "released once the log sync covers the removal");
        assert!(files.synced_blobs.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
