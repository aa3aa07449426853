//! Where table and view metadata files live.
//!
//! The catalog writes and reads metadata files through [`FileIo`]; the local
//! implementation uses glommio's io_uring file I/O. An object-store
//! implementation (S3 with vended credentials) slots in behind the same
//! trait without touching the catalog.

mod local;

pub use local::LocalFileIo;

use std::io;

/// File operations the catalog needs, by location string (a path or URI).
#[allow(async_fn_in_trait)] // Runs on its shard: no Send bound.
pub trait FileIo: 'static {
    /// Writes a new file (failing if it exists) and returns once it is
    /// durable: its data and its directory entry are on disk.
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()>;

    /// Reads a whole file.
    async fn read(&self, location: &str) -> io::Result<Vec<u8>>;

    /// The size of a file; `None` when it does not exist.
    async fn size(&self, location: &str) -> io::Result<Option<u64>>;

    /// Replaces a file's content (or recreates it) durably and atomically: a
    /// new file renamed over it. Refused outside the warehouse.
    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()>;

    /// Whether files can be written at `location`: `Err` says why not (the
    /// request asked for a location this warehouse cannot serve).
    fn check_location(&self, location: &str) -> Result<(), String>;

    /// Deletes a file; a missing file is not an error. Only files inside the
    /// warehouse are ever deleted, whatever a metadata log names.
    async fn delete(&self, location: &str) -> io::Result<()>;

    /// Deletes everything under a location (a table's purge); refused
    /// outside the warehouse.
    async fn delete_tree(&self, location: &str) -> io::Result<()>;

    /// The location of `name` under the warehouse root.
    fn warehouse_location(&self, parts: &[&str]) -> String;
}
