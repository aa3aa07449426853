//! A table commit on the slice path (`metadata::edit_commit`): the stored
//! JSON is edited, not parsed, and the new version's record is encoded from
//! its slices. For a big table that work, and the compression of the new
//! version, runs on the shard's background thread in one hand-off, so the
//! shard only copies the stored document once to hand it over (a slice at a
//! time, `bulk`).

use bumpalo::collections::Vec as ArenaVec;
use bumpalo::Bump;

use super::chunked::Reuse;
use super::compressed::{complete, complete_here, Codec, CODEC_PROPERTY};
use super::record::RecordBuilder;
use super::written::{encode_record, file_form};
use crate::error::ApiResult;
use crate::metadata::{edit_commit, Copied, TableRequirement, TableUpdate};

/// Stored metadata at least this long is edited on the background thread;
/// below it the edit (a scan and copies of at most this much) stays on the
/// shard, which spares a typical table's commit the hand-off.
pub(crate) const OFF_SHARD_BYTES: usize = 128 * 1024;

pub(crate) const DELETE_AFTER_COMMIT: &str = "write.metadata.delete-after-commit.enabled";

/// Whether `write.metadata.delete-after-commit.enabled` (its value) asks to
/// delete the metadata files that fell off the log.
pub(crate) fn delete_after_commit(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// What the slice path made of a commit.
pub(crate) enum Sliced<R> {
    /// The updates or the stored document need the owned model.
    Model,
    /// The updates change nothing.
    Unchanged,
    /// The new version's record, and the metadata files that fell off the log.
    Ready { record: R, expired: Vec<String>, delete_expired: bool },
}

/// A commit's inputs to the slice path.
pub(crate) struct SliceInput<'r> {
    /// The stored metadata JSON.
    pub doc: &'r [u8],
    /// The current metadata file, with its scheme.
    pub previous: &'r str,
    pub requirements: &'r [TableRequirement],
    pub updates: &'r [TableUpdate],
    pub now_ms: i64,
    /// Where the table will be, resolved (or why that location is refused).
    pub resolved: &'r ApiResult<String>,
    pub version: u64,
    pub default_codec: Codec,
    pub capacity: usize,
    /// Whether the catalog rewrites a metadata log entry's file.
    pub rewrite: fn(&str) -> bool,
    /// The stored gzip load answer and its chunk table (`chunked.rs`).
    pub gzip_load: &'r [u8],
    pub gzip_table: &'r [u8],
}

/// A new version's record without its compressed forms, with its codec and
/// where its document copied the stored one's.
type Edited<'r> = (RecordBuilder, Codec, ArenaVec<'r, Copied>);

/// Applies the commit and encodes the new version's record (without its
/// compressed forms, told by the `FileForm` of its codec); the edit's lists
/// go in `arena`, and where it copied the stored document when
/// `note_copies` (for a gzip answer that reuses the stored one's chunks).
fn slice<'r>(input: &SliceInput<'r>, arena: &'r Bump, note_copies: bool) -> ApiResult<Sliced<Edited<'r>>> {
    let Some(edit) = edit_commit(input.doc, input.requirements, input.updates, input.now_ms, arena) else {
        return Ok(Sliced::Model);
    };
    let mut edit = edit?;
    if !edit.changed() {
        return Ok(Sliced::Unchanged);
    }
    edit.set_location(input.resolved.as_ref().map_err(Clone::clone)?);
    let Some(expired) = edit.record_previous(input.previous, input.rewrite) else {
        return Ok(Sliced::Model);
    };
    let codec = Codec::of(edit.property(CODEC_PROPERTY), input.default_codec)?;
    let mut copies = ArenaVec::new_in(arena);
    let record = encode_record(
        edit.location(),
        input.version,
        codec,
        input.capacity,
        |out| edit.write(out, note_copies.then_some(&mut copies)),
        |out| edit.write_refs(out),
    )?;
    let delete_expired = delete_after_commit(edit.property(DELETE_AFTER_COMMIT));
    Ok(Sliced::Ready { record: (record, codec, copies), expired, delete_expired })
}

/// The slice path on this thread (its lists in the request's `arena`),
/// compressing on the blocking thread when the new version needs it (as
/// every writer does).
pub(crate) async fn slice_here<'r>(input: &SliceInput<'r>, arena: &'r Bump) -> ApiResult<Sliced<Vec<u8>>> {
    Ok(match slice(input, arena, false)? {
        Sliced::Ready { record: (record, codec, _), expired, delete_expired } => {
            Sliced::Ready { record: complete(record, file_form(codec)).await, expired, delete_expired }
        }
        Sliced::Model => Sliced::Model,
        Sliced::Unchanged => Sliced::Unchanged,
    })
}

/// The slice path and the compression together on the shard's background
/// thread: for big tables, whose scan, copies and gzip would stall the shard.
/// The gzip load answer reuses the stored one's chunks (`chunked.rs`).
pub(crate) async fn slice_off_shard(input: &SliceInput<'_>) -> ApiResult<Sliced<Vec<u8>>> {
    let doc = crate::bulk::to_vec(input.doc).await;
    let gzip_load = crate::bulk::to_vec(input.gzip_load).await;
    let gzip_table = input.gzip_table.to_vec();
    let previous = input.previous.to_owned();
    let (requirements, updates) = (input.requirements.to_vec(), input.updates.to_vec());
    let resolved = input.resolved.clone();
    let (now_ms, version, default_codec, capacity, rewrite) =
        (input.now_ms, input.version, input.default_codec, input.capacity, input.rewrite);
    crate::background::run(move || {
        let input = SliceInput {
            doc: &doc,
            previous: &previous,
            requirements: &requirements,
            updates: &updates,
            now_ms,
            resolved: &resolved,
            version,
            default_codec,
            capacity,
            rewrite,
            gzip_load: &gzip_load,
            gzip_table: &gzip_table,
        };
        let reusable = !gzip_table.is_empty();
        Ok(match slice(&input, &Bump::new(), reusable)? {
            Sliced::Ready { record: (record, codec, copies), expired, delete_expired } => {
                let reuse = reusable.then_some(Reuse {
                    gzip: &gzip_load,
                    table: &gzip_table,
                    doc_len: doc.len(),
                    copies: &copies,
                });
                Sliced::Ready { record: complete_here(record, file_form(codec), reuse), expired, delete_expired }
            }
            Sliced::Model => Sliced::Model,
            Sliced::Unchanged => Sliced::Unchanged,
        })
    })
    .await
}
