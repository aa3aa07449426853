//! Where table and view metadata files live.
//!
//! The catalog writes and reads metadata files through [`FileIo`]; the local
//! implementation uses glommio's io_uring file I/O, the S3 one the
//! `object_store` crate on a dedicated I/O thread. [`WarehouseIo`] is the
//! one the server runs: either, chosen by the warehouse's root. Every
//! location is an absolute URI (`file:///...`, `s3://bucket/...`).

mod io_thread;
mod local;
pub mod location;
mod s3;

pub use io_thread::IoThread;
pub use local::LocalFileIo;
pub use location::LocationError;
pub use s3::S3FileIo;

use std::io;

/// The largest metadata file a client may ask the server to read (register).
pub const MAX_METADATA_FILE: u64 = 64 << 20;

/// Why a metadata file a client named was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Not a location inside the warehouse.
    Location(LocationError),
    Missing,
    /// A directory or special file.
    NotARegularFile,
    /// Larger than [`MAX_METADATA_FILE`].
    TooLarge,
    Io(io::Error),
}

/// File operations the catalog needs, by location URI.
#[allow(async_fn_in_trait)] // Runs on its shard: no Send bound.
pub trait FileIo: 'static {
    /// Writes a new file (failing if it exists) and returns once it is
    /// durable: its data and its directory entry are on disk. `location`
    /// comes from [`FileIo::resolve`].
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()>;

    /// Reads a whole metadata file named by a client: only a regular file
    /// inside the warehouse, of bounded size.
    async fn read(&self, location: &str) -> Result<Vec<u8>, ReadError>;

    /// The normalised URI of a location this warehouse may write under:
    /// inside the warehouse root, and not the root itself.
    fn resolve(&self, location: &str) -> Result<String, LocationError>;

    /// The normalised URI of any location of this warehouse's scheme,
    /// inside the root or not (how a location is indexed).
    fn normalise(&self, location: &str) -> Result<String, LocationError>;

    /// The warehouse root, normalised.
    fn root(&self) -> &str;

    /// The size of a file; `None` when it does not exist.
    async fn size(&self, location: &str) -> io::Result<Option<u64>>;

    /// Replaces a file's content (or recreates it) durably and atomically: a
    /// new file renamed over it. Refused outside the warehouse.
    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()>;

    /// Deletes a file; a missing file is not an error. Only files inside the
    /// warehouse are ever deleted, whatever a metadata log names.
    async fn delete(&self, location: &str) -> io::Result<()>;

    /// Deletes everything under a location (a table's purge) except the
    /// subtrees at `keep` (locations of other live tables); refused outside
    /// the warehouse.
    async fn delete_tree(&self, location: &str, keep: Vec<String>) -> io::Result<()>;

    /// The default location of a table or view: its namespace and name as
    /// safe segments, and its UUID, so no two objects ever share one.
    fn default_location(&self, namespace: &[&str], name: &str, uuid: &str) -> String;
}

/// The warehouse the server runs: a local directory or an S3 bucket.
pub enum WarehouseIo {
    Local(LocalFileIo),
    S3(S3FileIo),
}

impl WarehouseIo {
    /// Opens a warehouse by its root: `s3://` with its settings, else local.
    pub fn open(warehouse: &crate::warehouse::Warehouse) -> Result<WarehouseIo, String> {
        match &warehouse.s3 {
            Some(settings) => {
                let io = IoThread::start("bingsan-s3").map_err(|e| format!("cannot start the S3 I/O thread: {e}"))?;
                S3FileIo::new(&warehouse.root, settings, io).map(WarehouseIo::S3)
            }
            None => LocalFileIo::new(&warehouse.root)
                .map(WarehouseIo::Local)
                .map_err(|e| format!("cannot open warehouse {}: {e}", warehouse.root)),
        }
    }

    /// The local directory, for the disk watcher; `None` for S3.
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        match self {
            WarehouseIo::Local(l) => Some(l.dir().to_path_buf()),
            WarehouseIo::S3(_) => None,
        }
    }
}

/// Forwards each method to the variant.
macro_rules! either {
    ($self:ident, $f:ident => $e:expr) => {
        match $self {
            WarehouseIo::Local($f) => $e,
            WarehouseIo::S3($f) => $e,
        }
    };
}

impl FileIo for WarehouseIo {
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        either!(self, f => f.write_new(location, bytes).await)
    }
    async fn read(&self, location: &str) -> Result<Vec<u8>, ReadError> {
        either!(self, f => f.read(location).await)
    }
    fn resolve(&self, location: &str) -> Result<String, LocationError> {
        either!(self, f => f.resolve(location))
    }
    fn normalise(&self, location: &str) -> Result<String, LocationError> {
        either!(self, f => f.normalise(location))
    }
    fn root(&self) -> &str {
        either!(self, f => f.root())
    }
    async fn size(&self, location: &str) -> io::Result<Option<u64>> {
        either!(self, f => f.size(location).await)
    }
    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        either!(self, f => f.restore(location, bytes).await)
    }
    async fn delete(&self, location: &str) -> io::Result<()> {
        either!(self, f => f.delete(location).await)
    }
    async fn delete_tree(&self, location: &str, keep: Vec<String>) -> io::Result<()> {
        either!(self, f => f.delete_tree(location, keep).await)
    }
    fn default_location(&self, namespace: &[&str], name: &str, uuid: &str) -> String {
        either!(self, f => f.default_location(namespace, name, uuid))
    }
}
