//! Where table and view metadata files live.
//!
//! The catalog writes and reads metadata files through [`FileIo`]; the local
//! implementation uses glommio's io_uring file I/O. An object-store
//! implementation (S3 with vended credentials) slots in behind the same
//! trait without touching the catalog. Every location is an absolute URI
//! (`file:///...` for the local warehouse).

mod local;
pub mod location;

pub use local::LocalFileIo;
pub use location::LocationError;

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
