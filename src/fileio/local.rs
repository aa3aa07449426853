//! The local filesystem warehouse.

use std::io;
use std::path::{Component, Path, PathBuf};

use glommio::io::{Directory, OpenOptions};

use super::FileIo;

/// A warehouse in a local directory. Locations are absolute paths, or
/// `file://` URIs when the warehouse was given as one.
pub struct LocalFileIo {
    root: PathBuf,
    uri: bool,
}

impl LocalFileIo {
    /// Creates the warehouse directory if needed.
    pub fn new(warehouse: &str) -> io::Result<LocalFileIo> {
        let (path, uri) = match warehouse.strip_prefix("file://") {
            Some(p) => (p, true),
            None => (warehouse, false),
        };
        std::fs::create_dir_all(path)?;
        Ok(LocalFileIo { root: std::fs::canonicalize(path)?, uri })
    }

    /// The resolved local path of `location` if it lies inside the warehouse
    /// (`..` and symbolic links resolved), `None` if it does not exist.
    fn inside_warehouse(&self, location: &str) -> io::Result<Option<PathBuf>> {
        let path = self.path(location)?;
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !resolved.starts_with(&self.root) || resolved == self.root {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refusing to delete {location}: outside the warehouse"),
            ));
        }
        Ok(Some(resolved))
    }

    /// The local path of a location this warehouse may touch.
    fn path<'l>(&self, location: &'l str) -> io::Result<&'l Path> {
        let p = location.strip_prefix("file://").unwrap_or(location);
        if p.contains("://") {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("unsupported location scheme: {location}")));
        }
        let path = Path::new(p);
        if !path.is_absolute() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("location is not absolute: {location}")));
        }
        Ok(path)
    }
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = Directory::open(dir).await?;
    d.sync().await?;
    d.close().await?;
    Ok(())
}

/// Creates `dir` and any missing parents, syncing each parent whose entry
/// changed so the new directories survive a crash.
async fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        at = match at.parent() {
            Some(p) => p,
            None => break,
        };
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent() {
            sync_dir(parent).await?;
        }
    }
    Ok(())
}

/// Writes a new file (failing if it exists) and syncs its data; its
/// directory entry is the caller's to sync.
async fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).buffered_open(path).await?;
    let mut pos = 0;
    while pos < bytes.len() {
        let n = file.write_at(bytes[pos..].to_vec(), pos as u64).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        pos += n;
    }
    file.fdatasync().await?;
    file.close().await?;
    Ok(())
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "location has no directory"))
}

impl LocalFileIo {
    /// The local path of `location` when it names a file inside the
    /// warehouse, existing or not: no `.` or `..` component, and its deepest
    /// existing ancestor (symbolic links resolved) inside the root.
    fn confined<'l>(&self, location: &'l str) -> io::Result<&'l Path> {
        let path = self.path(location)?;
        let outside = || io::Error::new(io::ErrorKind::PermissionDenied, "location outside the warehouse");
        if path.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir)) {
            return Err(outside());
        }
        let mut existing = path;
        while !existing.exists() {
            existing = existing.parent().ok_or_else(outside)?;
        }
        let resolved = std::fs::canonicalize(existing)?;
        // The root itself is no file to write; a missing path under it is.
        if !resolved.starts_with(&self.root) || (existing == path && resolved == self.root) {
            return Err(outside());
        }
        Ok(path)
    }
}

impl FileIo for LocalFileIo {
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(location)?;
        let dir = parent(path)?;
        create_dirs(dir).await?;
        write_file(path, bytes).await?;
        sync_dir(dir).await
    }

    async fn size(&self, location: &str) -> io::Result<Option<u64>> {
        let path = self.path(location)?;
        let file = match OpenOptions::new().read(true).buffered_open(path).await {
            Ok(f) => f,
            Err(e) => {
                let e: io::Error = e.into();
                return if e.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        let size = file.file_size().await?;
        file.close().await?;
        Ok(Some(size))
    }

    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.confined(location)?;
        let dir = parent(path)?;
        create_dirs(dir).await?;
        let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy());
        let staged = dir.join(format!(".{name}.restore-{}", uuid::Uuid::new_v4()));
        if let Err(e) = write_file(&staged, bytes).await {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        glommio::io::rename(&staged, path).await?;
        sync_dir(dir).await
    }

    async fn read(&self, location: &str) -> io::Result<Vec<u8>> {
        let path = self.path(location)?;
        let file = OpenOptions::new().read(true).buffered_open(&path).await?;
        let size = file.file_size().await? as usize;
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let chunk = file.read_at(out.len() as u64, size - out.len()).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        file.close().await?;
        Ok(out)
    }

    fn check_location(&self, location: &str) -> Result<(), String> {
        self.path(location).map(drop).map_err(|e| e.to_string())
    }

    async fn delete(&self, location: &str) -> io::Result<()> {
        let Some(path) = self.inside_warehouse(location)? else {
            return Ok(());
        };
        match glommio::io::remove(path).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e: io::Error = e.into();
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn delete_tree(&self, location: &str) -> io::Result<()> {
        let Some(path) = self.inside_warehouse(location)? else {
            return Ok(());
        };
        let result = glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(path)).await;
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn warehouse_location(&self, parts: &[&str]) -> String {
        let mut path = self.root.clone();
        // Identifiers may contain anything but control characters; keep
        // each one a single path component that cannot climb out.
        for p in parts {
            match *p {
                "." => path.push("%2E"),
                ".." => path.push("%2E%2E"),
                p if p.contains('/') => path.push(p.replace('%', "%25").replace('/', "%2F")),
                p => path.push(p),
            }
        }
        let path = path.to_string_lossy();
        if self.uri {
            format!("file://{path}")
        } else {
            path.into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_recreates_or_replaces_files_inside_the_warehouse_only() {
        let dir = std::env::temp_dir().join(format!("bingsan-fileio-{}", uuid::Uuid::new_v4()));
        let wh = dir.join("wh");
        let files = LocalFileIo::new(wh.to_str().unwrap()).unwrap();
        let root = files.root.clone();
        let test_dir = dir.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let at = |p: &str| root.join(p).to_str().unwrap().to_string();
                let file = at("ns/t/metadata/00001-x.metadata.json");
                assert_eq!(files.size(&file).await.unwrap(), None);
                files.restore(&file, b"{\"a\":1}").await.unwrap();
                assert_eq!(files.read(&file).await.unwrap(), b"{\"a\":1}");
                std::fs::write(&file, b"garbage, longer than before").unwrap();
                files.restore(&file, b"{\"a\":1}").await.unwrap();
                assert_eq!(files.size(&file).await.unwrap(), Some(7));
                let left: Vec<_> = std::fs::read_dir(root.join("ns/t/metadata")).unwrap().collect();
                assert_eq!(left.len(), 1, "no staged file is left behind");

                std::os::unix::fs::symlink(&test_dir, root.join("link")).unwrap();
                let escapes = [
                    test_dir.join("outside.json").to_str().unwrap().to_string(),
                    at("ns/../../outside.json"),
                    at("link/outside.json"),
                    root.to_str().unwrap().to_string(),
                ];
                for location in escapes {
                    let e = files.restore(&location, b"x").await.unwrap_err();
                    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{location}");
                }
                assert!(!test_dir.join("outside.json").exists());
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
