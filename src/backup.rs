//! Online backup and restore of the embedded store.
//!
//! `bingsan backup --to DIR` asks the running server, over the unix socket
//! `admin.sock` in its data directory (`server/admin.rs`), to write a
//! consistent snapshot of the store (`SledStore::snapshot`) to `DIR`.
//! `bingsan restore --from DIR` loads it into an empty data directory and
//! rewrites every current metadata file the warehouse lacks from its record
//! (records hold each file's bytes), so the pointers and the files agree.
//!
//! The file `DIR/catalog.backup`: a magic line, then per key `u32` key
//! length, `u32` value length (little endian), the key, the stored value
//! (version header included); then an end marker `u32::MAX`, the `u64`
//! count of keys and the CRC32 of everything before it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::store::SledStore;

/// Name of the admin socket in the data directory.
pub const SOCKET: &str = "admin.sock";
/// The one file of a backup directory.
pub const FILE: &str = "catalog.backup";
const MAGIC: &[u8] = b"bingsan-backup-v1\n";
const END: u32 = u32::MAX;

/// Settings of `bingsan backup`.
#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// Data directory of the running server (its admin socket is there).
    #[arg(long, env = "BINGSAN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// New or empty directory the server writes the backup to.
    #[arg(long)]
    pub to: PathBuf,
}

/// Settings of `bingsan restore`.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A directory written by `bingsan backup`.
    #[arg(long)]
    pub from: PathBuf,

    /// Empty (or new) data directory to restore the store into.
    #[arg(long, env = "BINGSAN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Warehouse of the restored server: current metadata files missing or
    /// different there are rewritten from the backup.
    #[arg(long, env = "BINGSAN_WAREHOUSE", default_value = "./warehouse")]
    pub warehouse: String,

    /// The restored server's warehouses file: every warehouse is restored.
    #[arg(long, env = "BINGSAN_WAREHOUSES_FILE")]
    pub warehouses_file: Option<PathBuf>,
}

/// `bingsan backup`: asks the server to write the snapshot; prints its size.
pub fn run_backup(args: BackupArgs) -> Result<(), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    // The server resolves paths against its own directory: send an absolute one.
    let to = cwd.join(&args.to);
    let to = to.to_str().ok_or("--to must be valid UTF-8")?;
    if to.contains('\n') {
        return Err("--to must not contain a newline".into());
    }
    let socket = args.data_dir.join(SOCKET);
    let mut conn = UnixStream::connect(&socket).map_err(|e| {
        format!("cannot reach the server at {} (is it running on this data directory?): {e}", socket.display())
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(3600))).map_err(|e| e.to_string())?;
    conn.write_all(format!("backup {to}\n").as_bytes()).map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).map_err(|e| format!("no answer from the server: {e}"))?;
    match answer.trim_end().split_once(' ') {
        Some(("ok", what)) => {
            println!("backup written to {to}: {what}");
            Ok(())
        }
        Some(("error", why)) => Err(format!("backup failed: {why}")),
        _ => Err(format!("unexpected answer from the server: {answer:?}")),
    }
}

/// Writes a snapshot to `dir` (new or empty) durably; returns a summary.
/// Runs on the admin thread of the server.
pub fn write(store: &SledStore, dir: &Path) -> Result<String, String> {
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err("the backup directory is not empty".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the backup directory: {e}"))?;
    let started = std::time::Instant::now();
    let snapshot = store.snapshot().map_err(|e| format!("cannot snapshot the store: {e}"))?;
    // How long writers waited (at most): the whole snapshot call.
    let paused = started.elapsed();
    let partial = dir.join(format!("{FILE}.partial"));
    let file = File::create(&partial).map_err(|e| format!("cannot create the backup file: {e}"))?;
    let mut out = Crc(BufWriter::new(file), crc32fast::Hasher::new());
    let mut bytes = 0u64;
    let written: std::io::Result<()> = (|| {
        out.write_all(MAGIC)?;
        for (key, raw) in &snapshot {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(&(raw.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(raw)?;
            bytes += (key.len() + raw.len()) as u64;
        }
        out.write_all(&END.to_le_bytes())?;
        out.write_all(&(snapshot.len() as u64).to_le_bytes())?;
        let crc = out.1.clone().finalize();
        out.0.write_all(&crc.to_le_bytes())?;
        let file = out.0.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, dir.join(FILE))?;
        File::open(dir)?.sync_all()?;
        // The new directory's own entry too.
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
            _ => Ok(()),
        }
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        format!("cannot write the backup file: {e}")
    })?;
    Ok(format!("{} keys, {bytes} bytes, writes paused {} us", snapshot.len(), paused.as_micros()))
}

/// A writer that checksums what passes through it.
struct Crc<W: Write>(W, crc32fast::Hasher);

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A stored key and its value (version header included).
pub type Entry = (Vec<u8>, Vec<u8>);

/// Reads and checks a backup file: every key and value, or why not.
pub fn read(dir: &Path) -> Result<Vec<Entry>, String> {
    let file = File::open(dir.join(FILE)).map_err(|e| format!("cannot open {}: {e}", dir.join(FILE).display()))?;
    let mut input = BufReader::new(file);
    let mut crc = crc32fast::Hasher::new();
    let corrupt = |what: &str| format!("the backup in {} is not complete or damaged ({what})", dir.display());
    let mut take = |n: usize, crc: &mut crc32fast::Hasher| -> Result<Vec<u8>, String> {
        let mut buf = vec![0; n];
        input.read_exact(&mut buf).map_err(|_| corrupt("truncated"))?;
        crc.update(&buf);
        Ok(buf)
    };
    if take(MAGIC.len(), &mut crc)? != MAGIC {
        return Err(corrupt("not a bingsan backup"));
    }
    let mut entries = Vec::new();
    loop {
        let key_len = u32::from_le_bytes(take(4, &mut crc)?.try_into().expect("4 bytes"));
        if key_len == END {
            break;
        }
        let value_len = u32::from_le_bytes(take(4, &mut crc)?.try_into().expect("4 bytes"));
        let key = take(key_len as usize, &mut crc)?;
        let value = take(value_len as usize, &mut crc)?;
        entries.push((key, value));
    }
    let count = u64::from_le_bytes(take(8, &mut crc)?.try_into().expect("8 bytes"));
    let want = crc.finalize();
    let have = u32::from_le_bytes(take(4, &mut crc32fast::Hasher::new())?.try_into().expect("4 bytes"));
    if have != want || count != entries.len() as u64 {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(entries)
}

/// `bingsan restore`: loads a backup into an empty data directory, then
/// restores the current metadata files the warehouse lacks.
pub fn run_restore(args: RestoreArgs) -> Result<(), String> {
    let entries = read(&args.from)?;
    let occupied = std::fs::read_dir(&args.data_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(format!("the data directory {:?} is not empty: restore only into an empty one", args.data_dir));
    }
    let store = SledStore::open(&args.data_dir).map_err(|e| format!("cannot create the store: {e}"))?;
    let count = store.load(entries).map_err(|e| format!("cannot load the backup: {e}"))?;
    println!("restored {count} keys into {}", args.data_dir.display());
    let warehouses = crate::warehouse::Warehouse::from_args(args.warehouses_file.as_deref(), &args.warehouse)?;
    crate::check::verify(store, warehouses, true)
}

#[cfg(test)]
mod tests {
    use super::{read, FILE};

    #[test]
    fn a_truncated_or_altered_backup_is_refused() {
        let dir = std::env::temp_dir().join(format!("bingsan-backup-{}", uuid::Uuid::new_v4()));
        let store_dir = dir.join("store");
        let store = crate::store::SledStore::open(&store_dir).unwrap();
        futures_lite::future::block_on(crate::store::Store::apply(
            &store,
            &[crate::store::Write::put(b"k", crate::store::Expect::Absent, b"value")],
        ))
        .unwrap();
        let to = dir.join("backup");
        assert!(super::write(&store, &to).unwrap().starts_with("1 keys, 14 bytes, writes paused "));
        let entries = read(&to).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(&entries[0].1[8..], b"value");
        assert!(super::write(&store, &to).unwrap_err().contains("not empty"));

        let bytes = std::fs::read(to.join(FILE)).unwrap();
        std::fs::write(to.join(FILE), &bytes[..bytes.len() - 1]).unwrap();
        assert!(read(&to).unwrap_err().contains("not complete or damaged"));
        let mut altered = bytes.clone();
        altered[20] ^= 1;
        std::fs::write(to.join(FILE), &altered).unwrap();
        assert!(read(&to).unwrap_err().contains("not complete or damaged"));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
