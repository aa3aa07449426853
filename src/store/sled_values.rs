//! Big values kept beside sled, each in a file of its own.
//!
//! sled writes a value over 128 KiB to a blob file in one `write` (6.5 MB
//! for a 10,000-snapshot table: 5–8 ms in the kernel, which a kernel
//! without preemption does not interrupt for the shard sharing the core),
//! and copies it twice more on the way. A value over a slice is therefore
//! written here instead, on the shard's background thread, around the page
//! cache (`bulk::write_synced`), synced with its directory before sled
//! holds the pointer to it, so a durable pointer never names a file that
//! is not.
//!
//! In sled, such a value is its version with [`FLAG`] set, then the
//! pointer: file id, length, CRC32 of the value. The file is
//! `values/<id as 16 hex digits>`: [`MAGIC`], the key's length (u32 little
//! endian), the key, the value. A file is removed once the batch that
//! replaced or deleted its value is durable; one a crash left unnamed (a
//! batch that never applied, a removal cut short) is removed at the next
//! open ([`ValueFiles::sweep`]), found by the key its header names.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sled::Tree;

/// Values longer than this are kept out of sled.
pub const OUT_OF_LINE: usize = crate::bulk::SLICE;

/// Set in a stored version header: the value is a [`Pointer`].
pub const FLAG: u64 = 1 << 63;

const MAGIC: &[u8; 8] = b"BSNVAL01";
const POINTER_LEN: usize = 20;

/// Where an out-of-line value is and how to know it is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub id: u64,
    pub len: u64,
    pub crc: u32,
}

impl Pointer {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
    }

    pub fn decode(raw: &[u8]) -> Option<Pointer> {
        let raw: &[u8; POINTER_LEN] = raw.try_into().ok()?;
        Some(Pointer {
            id: u64::from_le_bytes(raw[..8].try_into().ok()?),
            len: u64::from_le_bytes(raw[8..16].try_into().ok()?),
            crc: u32::from_le_bytes(raw[16..].try_into().ok()?),
        })
    }
}

/// The `values/` directory of one store; cheap to clone onto another thread.
#[derive(Clone)]
pub struct ValueFiles {
    dir: PathBuf,
}

fn header_len(key: &[u8]) -> u64 {
    (MAGIC.len() + 4 + key.len()) as u64
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("out-of-line value {what}"))
}

impl ValueFiles {
    /// Opens (creating, durably) `values/` in the store's directory.
    pub fn open(data_dir: &Path) -> io::Result<ValueFiles> {
        let dir = data_dir.join("values");
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            File::open(data_dir)?.sync_all()?;
        }
        Ok(ValueFiles { dir })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}"))
    }

    /// Writes `value` of `key` to a new file and syncs it (not its
    /// directory: [`sync_dir`](Self::sync_dir) once for a batch). Blocking:
    /// run it on the background thread. A failed write leaves no file.
    pub fn write(&self, key: &[u8], value: &[u8]) -> io::Result<Pointer> {
        let (id, file) = loop {
            let id = uuid::Uuid::new_v4().as_u64_pair().0;
            match OpenOptions::new().write(true).create_new(true).open(self.path(id)) {
                Ok(file) => break (id, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut head = Vec::with_capacity(header_len(key) as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(key.len() as u32).to_le_bytes());
        head.extend_from_slice(key);
        let written = crate::bulk::write_synced(&file, &[&head, value]);
        if let Err(e) = written {
            let _ = fs::remove_file(self.path(id));
            return Err(e);
        }
        Ok(Pointer { id, len: value.len() as u64, crc: crc32fast::hash(value) })
    }

    /// Makes the entries of files written since durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// The stored bytes of `key` at `version` (the version header first,
    /// as sled keeps an inline value), read from its file and checked
    /// against the pointer. `NotFound` when the file is gone: the value
    /// was replaced since the pointer was read. Blocking.
    pub fn read(&self, key: &[u8], version: u64, p: Pointer) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(p.id))?;
        let mut head = vec![0; header_len(key) as usize];
        file.read_exact_at(&mut head, 0)?;
        if &head[..8] != MAGIC || head[8..12] != (key.len() as u32).to_le_bytes() || &head[12..] != key {
            return Err(corrupt("file names another key"));
        }
        let mut raw = Vec::with_capacity(8 + p.len as usize);
        raw.extend_from_slice(&version.to_le_bytes());
        raw.resize(8 + p.len as usize, 0);
        let mut at = 0;
        while at < p.len as usize {
            let end = (at + crate::bulk::SLICE).min(p.len as usize);
            file.read_exact_at(&mut raw[8 + at..8 + end], header_len(key) + at as u64)?;
            at = end;
        }
        if crc32fast::hash(&raw[8..]) != p.crc || file.metadata()?.len() != header_len(key) + p.len {
            return Err(corrupt("does not match its pointer"));
        }
        Ok(raw)
    }

    /// Removes the files of values a durable batch replaced or deleted.
    /// A failure only leaves a file for the next open's sweep.
    pub fn remove(&self, ids: &[u64]) {
        for &id in ids {
            if let Err(e) = fs::remove_file(self.path(id)) {
                tracing::warn!(id = format_args!("{id:016x}"), "could not remove a replaced value's file: {e}");
            }
        }
    }

    /// Removes every file no pointer in `tree` names; returns how many.
    pub fn sweep(&self, tree: &Tree, pointer_in: impl Fn(&[u8]) -> Option<Pointer>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let id = entry.file_name().to_str().and_then(|n| u64::from_str_radix(n, 16).ok());
            let named = match (id, key_of(&entry.path())) {
                (Some(id), Ok(key)) => {
                    tree.get(&key).map_err(io::Error::other)?.and_then(|raw| pointer_in(&raw)).map(|p| p.id) == Some(id)
                }
                _ => false,
            };
            if !named {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }
}

/// The key a value file's header names.
fn key_of(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut head = [0; 12];
    file.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(corrupt("file has no header"));
    }
    let mut key = vec![0; u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize];
    file.read_exact(&mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (ValueFiles, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bingsan-values-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        (ValueFiles::open(&dir).unwrap(), dir)
    }

    #[test]
    fn a_value_reads_back_only_whole_and_for_its_key() {
        let (v, dir) = files();
        let value: Vec<u8> = (0..3 * crate::bulk::SLICE + 5).map(|i| (i % 251) as u8).collect();
        let p = v.write(b"key", &value).unwrap();
        assert_eq!(
            Pointer::decode(&{
                let mut b = Vec::new();
                p.encode(&mut b);
                b
            }),
            Some(p)
        );
        let raw = v.read(b"key", 7, p).unwrap();
        assert_eq!((&raw[..8], &raw[8..]), (&7u64.to_le_bytes()[..], &value[..]));
        assert_eq!(v.read(b"other", 7, p).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let wrong = Pointer { crc: p.crc ^ 1, ..p };
        assert_eq!(v.read(b"key", 7, wrong).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A torn file (a crash before its sync) is refused, not served short.
        let path = v.path(p.id);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 1).unwrap();
        assert!(v.read(b"key", 7, p).is_err());
        v.remove(&[p.id]);
        assert_eq!(v.read(b"key", 7, p).unwrap_err().kind(), io::ErrorKind::NotFound);
        fs::remove_dir_all(dir).unwrap();
    }
}
