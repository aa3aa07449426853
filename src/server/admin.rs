//! The admin socket: `admin.sock` in the data directory (mode 0600, so only
//! the server's user, who owns the store anyway, can use it), served by the
//! `bingsan-admin` thread, one request at a time. One request per
//! connection, one line: `backup /absolute/dir`; the answer is `ok <summary>`
//! or `error <reason>` (see `backup.rs`). Never on a shard: a backup writes
//! files and pauses the store's writers while it collects the keys.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::fileio::FileIo;
use crate::store::{SledStore, Store};

/// Holds the socket; removes its file when the server stops.
pub struct Admin {
    path: PathBuf,
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing one a killed server left) and starts its thread.
pub fn start<S: Store, F: FileIo>(data_dir: &Path, shared: Arc<Shared<S, F>>) -> Result<Admin, String>
where
    Shared<S, F>: Send + Sync,
{
    let path = data_dir.join(crate::backup::SOCKET);
    // sled's lock on the directory means no other server uses this socket.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("cannot create the admin socket {path:?}: {e}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict the admin socket {path:?}: {e}"))?;
    std::thread::Builder::new()
        .name("bingsan-admin".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Some(store) = shared.store.embedded() {
                    serve(conn, store);
                }
            }
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(Admin { path })
}

fn serve(conn: UnixStream, store: &SledStore) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let answer = match line.trim_end().split_once(' ') {
        Some(("backup", dir)) if Path::new(dir).is_absolute() => {
            tracing::info!(dir, "backup requested");
            let outcome = crate::backup::write(store, Path::new(dir));
            match &outcome {
                Ok(summary) => tracing::info!(dir, summary, "backup written"),
                Err(e) => tracing::error!(dir, error = %e, "backup failed"),
            }
            outcome
        }
        _ => Err("unknown request (expected `backup /absolute/dir`)".into()),
    };
    let text = match answer {
        Ok(summary) => format!("ok {summary}\n"),
        Err(e) => format!("error {e}\n"),
    };
    let _ = (&conn).write_all(text.as_bytes());
}
