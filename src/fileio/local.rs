//! The local filesystem warehouse.

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};

use super::location::{self, lexical, local_path, resolve_links, uri, LocationError};
use super::{FileIo, ReadError, MAX_METADATA_FILE};

/// A warehouse in a local directory, given as a path or a `file://` URI;
/// every location it hands out is a `file://` URI.
pub struct LocalFileIo {
    root: PathBuf,
    root_uri: String,
}

impl LocalFileIo {
    /// Creates the warehouse directory if needed. The operator may name it
    /// by a relative path; any other location error refuses to start.
    pub fn new(warehouse: &str) -> io::Result<LocalFileIo> {
        let path = match local_path(warehouse) {
            Ok(p) => Path::new(p),
            Err(LocationError::Relative) => Path::new(warehouse),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
        };
        std::fs::create_dir_all(path)?;
        let root = std::fs::canonicalize(path)?;
        Ok(LocalFileIo { root_uri: uri(&root), root })
    }

    /// The warehouse directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The real path of a location: lexically cleaned, links of its
    /// existing part resolved; borrowed from `location` when that is it.
    fn real_path(location: &str) -> Result<Cow<'_, Path>, LocationError> {
        Ok(resolve_links(lexical(local_path(location)?)))
    }

    /// The real path of a location strictly inside the warehouse.
    fn inside<'l>(&self, location: &'l str) -> Result<Cow<'l, Path>, LocationError> {
        let path = Self::real_path(location)?;
        if path == self.root {
            Err(LocationError::Root)
        } else if path.starts_with(&self.root) {
            Ok(path)
        } else {
            Err(LocationError::Outside)
        }
    }
}

fn refused(e: LocationError) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
}

/// Syncs a directory's entries. Opened on the shard like a new file (see
/// [`write_file`]): a path lookup in memory, where glommio's open is an
/// io_uring round trip with copies of the path; the sync waits for the disk.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let opened = std::fs::File::open(dir)?;
    // SAFETY: the descriptor moves into `d`, its only owner, which closes it.
    let d = unsafe { BufferedFile::from_raw_fd(opened.into_raw_fd()) };
    let synced = d.fdatasync().await;
    let closed = d.close().await;
    synced.and(closed).map_err(io::Error::from)
}

/// Creates `dir` and any missing parents up from `root`, syncing each
/// parent whose entry changed so the new directories survive a crash.
async fn create_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        at = match at.parent() {
            Some(p) => p,
            None => break,
        };
    }
    // The first existing ancestor may be another writer's new directory
    // whose parent sync is still under way (two tables created at once in a
    // namespace without files yet): ours must not be answered before it is.
    if !missing.is_empty() && at != root {
        if let Some(parent) = at.parent() {
            sync_dir(parent).await?;
        }
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

/// Removes everything under `dir` but the subtrees in `keep` (and the
/// directories that still hold them). Runs on the blocking pool.
fn remove_tree(dir: &Path, keep: &[PathBuf]) -> io::Result<()> {
    if keep.iter().all(|k| !k.starts_with(dir)) {
        return std::fs::remove_dir_all(dir);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if keep.contains(&path) {
            continue;
        }
        // Not followed: a link is removed, never what it points to.
        if std::fs::symlink_metadata(&path)?.is_dir() {
            remove_tree(&path, keep)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Files up to this size are written and synced from the shard: copying a
/// few KiB into the page cache costs less than any hand-off.
const INLINE_WRITE_MAX: usize = 128 * 1024;

/// Writes a new file (failing if it exists) and syncs its data; with `dir`,
/// syncs that directory at the same time, which makes the new name durable
/// (it exists from the create on). A file left partly written is removed:
/// nothing references it, and on a full disk it only takes space.
///
/// The create runs on the shard: it changes inodes and the directory in
/// memory (microseconds), while through io_uring it cost two worker
/// hand-offs (the open, and glommio's `statx` of every file it opens). A
/// small file's data is written there too and synced by an io_uring request.
/// A bigger one (a 10,000-snapshot table's 5.9 MB) is copied over a slice at
/// a time and written and synced on the background thread, which shares the
/// shard's core and yields it to a waiting shard (`crate::background`),
/// around the page cache (`bulk::write_synced`).
async fn write_file(path: &Path, bytes: &[u8], dir: Option<&Path>) -> io::Result<()> {
    let mut created = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let data = async {
        if bytes.len() > INLINE_WRITE_MAX {
            let owned = crate::bulk::to_vec(bytes).await;
            return crate::background::run(move || crate::bulk::write_synced(&created, &[&owned])).await;
        }
        let written = created.write_all(bytes);
        // SAFETY: the descriptor moves into `file`, its only owner, which closes it.
        let file = unsafe { BufferedFile::from_raw_fd(created.into_raw_fd()) };
        let synced = match written {
            Ok(()) => file.fdatasync().await.map_err(io::Error::from),
            Err(e) => Err(e),
        };
        let closed = file.close().await.map_err(io::Error::from);
        synced.and(closed)
    };
    let synced = match dir {
        Some(dir) => {
            let (data, dir) = futures_lite::future::zip(data, sync_dir(dir)).await;
            data.and(dir)
        }
        None => data.await,
    };
    if let Err(e) = synced {
        if let Err(e) = glommio::io::remove(path).await {
            tracing::warn!(error = %e, "cannot remove a partly written metadata file");
        }
        return Err(e);
    }
    Ok(())
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "location has no directory"))
}

impl FileIo for LocalFileIo {
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.inside(location).map_err(refused)?;
        let dir = parent(&path)?;
        create_dirs(&self.root, dir).await?;
        write_file(&path, bytes, Some(dir)).await
    }

    async fn size(&self, location: &str) -> io::Result<Option<u64>> {
        let path = self.inside(location).map_err(refused)?;
        // A stat, not open + fstat + close through io_uring: one syscall on
        // a path whose directories `inside` has just walked, where those
        // were three round trips and a dozen allocations before each commit.
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.inside(location).map_err(refused)?;
        let dir = parent(&path)?;
        create_dirs(&self.root, dir).await?;
        let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy());
        let staged = dir.join(format!(".{name}.restore-{}", uuid::Uuid::new_v4()));
        write_file(&staged, bytes, None).await?;
        glommio::io::rename(&staged, &path).await?;
        sync_dir(dir).await
    }

    async fn read(&self, location: &str) -> Result<Vec<u8>, ReadError> {
        let path = self.inside(location).map_err(ReadError::Location)?;
        // Checked before opening: a FIFO or device would block or never end.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
            Err(e) => return Err(ReadError::Io(e)),
        };
        if !meta.is_file() {
            return Err(ReadError::NotARegularFile);
        }
        if meta.len() > MAX_METADATA_FILE {
            return Err(ReadError::TooLarge);
        }
        let file = OpenOptions::new().read(true).buffered_open(&path).await.map_err(|e| ReadError::Io(e.into()))?;
        let size = (file.file_size().await.map_err(|e| ReadError::Io(e.into()))?).min(MAX_METADATA_FILE) as usize;
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let chunk = file.read_at(out.len() as u64, size - out.len()).await.map_err(|e| ReadError::Io(e.into()))?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        file.close().await.map_err(|e| ReadError::Io(e.into()))?;
        Ok(out)
    }

    fn resolve(&self, location: &str) -> Result<String, LocationError> {
        self.inside(location).map(|p| uri(&p))
    }

    fn normalise(&self, location: &str) -> Result<String, LocationError> {
        Self::real_path(location).map(|p| uri(&p))
    }

    fn root(&self) -> &str {
        &self.root_uri
    }

    async fn delete(&self, location: &str) -> io::Result<()> {
        let path = self.inside(location).map_err(refused)?;
        // A small file on the shard, as a create (`write_file`): an unlink
        // changes the directory in memory, and nothing syncs it. A big one's
        // blocks take the file system milliseconds to free: off the shard.
        let big = std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > INLINE_WRITE_MAX as u64);
        let removed = if big {
            let path = path.into_owned();
            crate::background::run(move || std::fs::remove_file(path)).await
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn delete_tree(&self, location: &str, keep: Vec<String>) -> io::Result<()> {
        let path = self.inside(location).map_err(refused)?.into_owned();
        let keep: Vec<PathBuf> = keep.iter().filter_map(|k| Self::real_path(k).ok().map(Cow::into_owned)).collect();
        let result = crate::background::run(move || remove_tree(&path, &keep)).await;
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn default_location(&self, namespace: &[&str], name: &str, uuid: &str) -> String {
        location::default_location(&self.root_uri, namespace, name, uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_removal_keeps_the_subtrees_it_is_told_to() {
        let dir = std::env::temp_dir().join(format!("bingsan-tree-{}", uuid::Uuid::new_v4()));
        let outside = dir.with_extension("outside");
        for d in [dir.join("t/data/a"), dir.join("t/other/metadata"), outside.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dir.join("t/data/a/f"), b"x").unwrap();
        std::fs::write(dir.join("t/other/metadata/m"), b"x").unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("t/link")).unwrap();
        remove_tree(&dir.join("t"), &[dir.join("t/other")]).unwrap();
        assert!(dir.join("t/other/metadata/m").is_file() && outside.join("keep").is_file());
        assert!(!dir.join("t/data").exists() && !dir.join("t/link").exists());
        remove_tree(&dir.join("t"), &[]).unwrap();
        assert!(!dir.join("t").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn new_files_are_written_whole_and_never_over_an_existing_one() {
        let dir = std::env::temp_dir().join(format!("bingsan-new-{}", uuid::Uuid::new_v4()));
        let files = LocalFileIo::new(dir.to_str().unwrap()).unwrap();
        let root = files.root.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let at = |p: &str| root.join(p).to_str().unwrap().to_string();
                // Below and above the size written on the shard.
                let small = b"{\"v\":1}".to_vec();
                let big: Vec<u8> = (0..3 * INLINE_WRITE_MAX + 17).map(|i| (i % 251) as u8).collect();
                for (name, bytes) in [("ns/t/metadata/a.json", &small), ("ns/t/metadata/b.json", &big)] {
                    let file = at(name);
                    assert_eq!(files.size(&file).await.unwrap(), None);
                    files.write_new(&file, bytes).await.unwrap();
                    assert_eq!(files.size(&file).await.unwrap(), Some(bytes.len() as u64));
                    assert_eq!(&files.read(&file).await.unwrap(), bytes);
                }
                let e = files.write_new(&at("ns/t/metadata/a.json"), b"other").await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
                assert_eq!(files.read(&at("ns/t/metadata/a.json")).await.unwrap(), small, "the first file is intact");
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

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
