//! A new metadata version on its way to the store. Its record is encoded
//! once, with the metadata serialized straight into it; the metadata file is
//! written from those bytes, and the answer copies from them.

use std::io::Write as _;

use super::compressed::{complete, Codec, FileForm};
use super::record::{Record, RecordBuilder};
use super::Catalog;
use crate::disk::{self, Cause, Target};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::FileIo;
use crate::store::Store;

/// Room for what one commit adds to a record (a snapshot, log entries), on
/// top of the current record's size, so the new one rarely regrows.
pub(crate) const COMMIT_GROWTH: usize = 4096;

/// A guess of the record size of a new table or view created from a
/// request `body`: the request's schema and properties plus defaults.
pub(crate) fn new_record_capacity(body: &[u8]) -> usize {
    2 * body.len() + COMMIT_GROWTH
}

/// A written metadata version: its encoded store record.
pub(crate) struct Written {
    record: Vec<u8>,
}

impl Written {
    /// The record's fields.
    pub fn parts(&self) -> Record<'_> {
        Record::decode(&self.record).expect("a record encoded by write_metadata_json")
    }

    pub fn location(&self) -> &str {
        self.parts().metadata_location
    }

    pub fn metadata(&self) -> &[u8] {
        self.parts().metadata
    }

    /// The bytes to store.
    pub fn record(&self) -> &[u8] {
        &self.record
    }
}

/// Serializing into a `Vec` fails only on a bug.
pub(crate) fn encoding_failure(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("serializing metadata: {e}"))
}

/// How the metadata file of a version written with `codec` is stored.
pub(crate) fn file_form(codec: Codec) -> FileForm {
    if codec == Codec::Gzip {
        FileForm::Gzip
    } else {
        FileForm::Plain
    }
}

/// Encodes the record of a new metadata file `version` under `root` (the
/// object's location, resolved), named for `codec`, with `metadata` and
/// `refs` (the `snapshots=refs` rendering; nothing when it is the same)
/// serialized into it; its compressed forms are still to be added.
/// `capacity` guesses the record's size.
pub(crate) fn encode_record(
    root: &str,
    version: u64,
    codec: Codec,
    capacity: usize,
    metadata: impl FnOnce(&mut Vec<u8>) -> sonic_rs::Result<()>,
    refs: impl FnOnce(&mut Vec<u8>) -> sonic_rs::Result<()>,
) -> ApiResult<RecordBuilder> {
    let mut record = RecordBuilder::with_capacity(capacity);
    record
        .field(|out| {
            let root = root.trim_end_matches('/');
            write!(out, "{root}/metadata/{version:05}-{}{}", uuid::Uuid::new_v4(), codec.file_suffix())
        })
        .map_err(encoding_failure)?;
    record.field(metadata).map_err(encoding_failure)?;
    record.field(refs).map_err(encoding_failure)?;
    Ok(record)
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// Encodes a record (`encode_record`) with its compressed forms, and
    /// writes the metadata file durably, compressed with `codec`.
    pub(crate) async fn write_metadata_json(
        &self,
        root: &str,
        version: u64,
        codec: Codec,
        capacity: usize,
        metadata: impl FnOnce(&mut Vec<u8>) -> sonic_rs::Result<()>,
        refs: impl FnOnce(&mut Vec<u8>) -> sonic_rs::Result<()>,
    ) -> ApiResult<Written> {
        let record = encode_record(root, version, codec, capacity, metadata, refs)?;
        self.write_record(complete(record, file_form(codec)).await).await
    }

    /// Writes the metadata file of a complete `record` durably.
    pub(crate) async fn write_record(&self, record: Vec<u8>) -> ApiResult<Written> {
        let written = Written { record };
        let parts = written.parts();
        let location = parts.metadata_location;
        self.files.write_new(location, parts.file_bytes()).await.map_err(|e| {
            tracing::error!(error = %e, location, "writing metadata file failed");
            match Cause::of(&e) {
                Some(cause) => disk::write_failed(Target::Warehouse, cause),
                None => ApiError::new(ErrorKind::ServiceUnavailable, "cannot write the metadata file at this location"),
            }
        })?;
        disk::write_succeeded(Target::Warehouse);
        Ok(written)
    }
}
