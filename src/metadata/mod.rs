//! Iceberg table and view metadata: the model, creation, and the commit engine.
//!
//! Everything here is pure logic over values: no I/O, no clocks, no HTTP. Callers pass
//! the current time and the locations of files, and get back new metadata or a
//! [`MetadataError`] that says which HTTP status it deserves.

mod commit;
mod create;
mod de;
mod edit;
mod encryption;
mod error;
mod metadata_log;
mod partition;
mod requests;
mod requirement;
mod scan;
mod schema;
mod snapshot;
mod sort;
mod statistics;
mod string_map;
mod table;
#[cfg(test)]
mod test_support;
mod update;
mod view;
mod view_commit;

pub use commit::{apply_commit, apply_create, CommitOutcome};
pub use create::new_table_metadata;
pub use edit::{commit_locations, edit_commit, Copied, TableEdit};
pub use encryption::EncryptedKey;
pub use error::MetadataError;
pub use metadata_log::record_previous;
pub use partition::{PartitionField, PartitionSpec, UnboundPartitionField, UnboundPartitionSpec};
pub use requests::{CommitTableRequest, CommitTransactionRequest, CreateTableRequest, TableIdentifier};
pub use requirement::{quick_conflict, TableRequirement};
pub use schema::{ListType, MapType, PrimitiveType, Schema, StructField, StructType, Type};
pub use snapshot::{MetadataLogEntry, Snapshot, SnapshotLogEntry, SnapshotRefType, SnapshotReference};
pub use sort::{NullOrder, SortDirection, SortField, SortOrder};
pub use statistics::{BlobMetadata, PartitionStatisticsFile, StatisticsFile};
pub use table::TableMetadata;
pub use update::TableUpdate;
pub use view::{
    CommitViewRequest, CreateViewRequest, SqlViewRepresentation, ViewHistoryEntry, ViewMetadata, ViewRepresentation,
    ViewRequirement, ViewUpdate, ViewVersion,
};
pub use view_commit::{apply_view_commit, new_view_metadata, ViewCommitOutcome};
