//! Compressed forms of a metadata version, made once when the version is
//! written and kept in its record (`record.rs`): the gzip load answers a
//! client that accepts gzip is served as stored bytes, and the file bytes of
//! a table or view whose metadata files are gzip (`write.metadata.compression-codec`).
//!
//! A big table's gzip load answer is chunked (`chunked.rs`): a commit
//! compresses again only the chunks its edits touched.
//!
//! The compression runs on the shard's blocking thread (glommio's
//! `spawn_blocking`; a record of 128 KiB or more on its background thread,
//! `crate::background`), never on its executor: a shard spends no CPU on
//! compression, on writes or on loads. The writer waits for it (a 6 MB
//! document: tens of ms, see `docs/performance.md`) before its metadata
//! file and record are written, so a record never lacks its compressed forms.

use std::io::Read;

use flate2::read::GzDecoder;

use super::chunked::Reuse;
use super::record::{Record, RecordBuilder};
use super::tables::{load_result_head, load_result_tail, LOAD_RESULT_TAIL_MAX};
use crate::error::{ApiError, ApiResult};

/// Load answers shorter than this are not compressed (`docs/performance.md`):
/// below it gzip saves under a few KB, a few µs on a 1 Gbit/s link, less
/// than the blocking thread's round trip costs every commit of a small table.
pub const GZIP_MIN_BODY: usize = 4096;

/// gzip level of the stored forms (`docs/performance.md`): with zlib-rs,
/// level 2 is within 5% of level 6's size at a third of its CPU, which the
/// blocking thread takes from its core on every commit; level 1 (zlib-ng's
/// "quick" strategy) is 45% larger.
const LEVEL: u32 = 2;

/// The table (and view) property naming the codec of metadata files.
pub const CODEC_PROPERTY: &str = "write.metadata.compression-codec";

/// The codec of metadata files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
}

impl Codec {
    /// An object's codec: the value of its property (case-insensitive, as Iceberg Java
    /// reads it), else the catalog's `default`; 400 for an unknown codec.
    pub fn of(property: Option<&str>, default: Codec) -> ApiResult<Codec> {
        match property.map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "none" => Ok(Codec::None),
            Some(v) if v == "gzip" => Ok(Codec::Gzip),
            Some(v) => Err(ApiError::bad_request(format!("unsupported {CODEC_PROPERTY} {v:?}: use none or gzip"))),
        }
    }

    /// How a metadata file name written with this codec ends (Iceberg Java's
    /// `TableMetadataParser.getFileExtension`).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Codec::None => ".metadata.json",
            Codec::Gzip => ".gz.metadata.json",
        }
    }
}

/// Whether a metadata file's name says it is gzip: `.gz.metadata.json`
/// (Iceberg Java and PyIceberg) or `.metadata.json.gz` (older Java writers).
pub fn is_gzip_name(location: &str) -> bool {
    location.ends_with(".gz.metadata.json") || location.ends_with(".metadata.json.gz")
}

/// What the metadata file of a new record holds.
pub(crate) enum FileForm {
    /// The metadata JSON itself.
    Plain,
    /// The JSON, gzip-compressed here.
    Gzip,
    /// These bytes, as read from the file (a registered gzip file).
    AsRead(Vec<u8>),
}

/// Ends a record that holds a location, metadata and refs rendering with
/// its compressed forms, computed on the blocking thread when there is any
/// (the background thread for a big table's, `crate::background`).
pub(crate) async fn complete(record: RecordBuilder, file: FileForm) -> Vec<u8> {
    if !is_big(&record) && matches!(file, FileForm::Plain) {
        return record.finish();
    }
    if record.as_bytes().len() >= super::sliced::OFF_SHARD_BYTES {
        return crate::background::run(move || complete_here(record, file, None)).await;
    }
    glommio::executor().spawn_blocking(move || complete_here(record, file, None)).await
}

/// [`complete`] on this thread: for a caller already on the blocking
/// thread, with the gzip answer of the version before when the new one
/// copied its document from that version's (`chunked.rs`).
pub(crate) fn complete_here(record: RecordBuilder, file: FileForm, reuse: Option<Reuse<'_>>) -> Vec<u8> {
    let big = is_big(&record);
    if !big && matches!(file, FileForm::Plain) {
        return record.finish();
    }
    add_compressed(record, file, big, reuse)
}

/// Whether a record's load answer is big enough to be kept compressed.
fn is_big(record: &RecordBuilder) -> bool {
    let r = Record::decode(record.as_bytes()).expect("a record of location, metadata and refs");
    load_len(r.metadata_location, r.metadata) >= GZIP_MIN_BODY
}

/// A guess (escapes aside) of a load answer's length.
fn load_len(location: &str, metadata: &[u8]) -> usize {
    metadata.len() + location.len() + 48
}

fn add_compressed(mut record: RecordBuilder, file: FileForm, big: bool, reuse: Option<Reuse<'_>>) -> Vec<u8> {
    let r = Record::decode(record.as_bytes()).expect("a record of location, metadata and refs");
    let file = match file {
        FileForm::Plain => Vec::new(),
        FileForm::Gzip => gzip(r.metadata),
        FileForm::AsRead(bytes) => bytes,
    };
    // Both load answers are chunked members (`chunked.rs`); only the full
    // one keeps its table, as only its document is edited by commits.
    let mut head = Vec::with_capacity(r.metadata_location.len() + 48);
    load_result_head(&mut head, Some(r.metadata_location));
    let mut tail = Vec::with_capacity(LOAD_RESULT_TAIL_MAX);
    load_result_tail(&mut tail, true);
    let load = |metadata: &[u8], reuse| super::chunked::gzip_load(&head, metadata, &tail, LEVEL, reuse);
    let (all, table) = if big { load(r.metadata, reuse) } else { (Vec::new(), Vec::new()) };
    let refs = r.refs_metadata;
    let refs =
        if big && load_len(r.metadata_location, refs) >= GZIP_MIN_BODY { load(refs, None).0 } else { Vec::new() };
    for field in [&file, &all, &refs, &table] {
        record.bytes(field);
    }
    record.finish()
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    super::chunked::gzip_whole(&[bytes], LEVEL)
}

/// Why a gzip metadata file was not decompressed.
#[derive(Debug, PartialEq, Eq)]
pub enum GunzipError {
    NotGzip,
    TooLarge,
}

/// Decompresses a gzip file of at most `max` bytes once decompressed, on
/// the background thread (megabytes: long work).
pub async fn gunzip(bytes: Vec<u8>, max: u64) -> Result<Vec<u8>, GunzipError> {
    crate::background::run(move || gunzip_now(&bytes, max)).await
}

fn gunzip_now(bytes: &[u8], max: u64) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(8).min(max as usize));
    GzDecoder::new(bytes).take(max + 1).read_to_end(&mut out).map_err(|_| GunzipError::NotGzip)?;
    if out.len() as u64 > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tables::write_load_result;
    use super::*;

    #[test]
    fn codec_from_properties_and_default() {
        assert_eq!(Codec::of(None, Codec::Gzip).unwrap(), Codec::Gzip);
        assert_eq!(Codec::of(Some("GZIP"), Codec::None).unwrap(), Codec::Gzip);
        assert_eq!(Codec::of(Some("none"), Codec::Gzip).unwrap(), Codec::None);
        assert!(Codec::of(Some("zstd"), Codec::None).is_err());
        assert!(is_gzip_name("/w/t/metadata/00001-u.gz.metadata.json"));
        assert!(is_gzip_name("/w/t/metadata/v1.metadata.json.gz"));
        assert!(!is_gzip_name("/w/t/metadata/00001-u.metadata.json"));
    }

    #[test]
    fn gunzip_round_trips_and_bounds() {
        let json = br#"{"format-version":2}"#.repeat(100);
        assert_eq!(gunzip_now(&gzip(&json), 1 << 20).unwrap(), json);
        assert_eq!(gunzip_now(&gzip(&json), json.len() as u64 - 1), Err(GunzipError::TooLarge));
        assert_eq!(gunzip_now(b"{\"plain\":true}", 1 << 20), Err(GunzipError::NotGzip));
    }

    #[test]
    fn big_records_get_gzip_load_answers_small_ones_nothing() {
        let record = |metadata: &[u8], refs: &[u8]| {
            let mut b = RecordBuilder::with_capacity(0);
            for field in [&b"file:///w/t/metadata/00001-u.metadata.json"[..], metadata, refs] {
                b.bytes(field);
            }
            b
        };
        let big = format!("{{\"snapshots\":[{}]}}", vec!["{\"snapshot-id\":1}"; 1000].join(","));
        let raw = add_compressed(record(big.as_bytes(), b"{}"), FileForm::Gzip, true, None);
        let r = Record::decode(&raw).unwrap();
        assert_eq!(gunzip_now(r.file_bytes(), 1 << 20).unwrap(), big.as_bytes());
        let mut plain = Vec::new();
        write_load_result(&mut plain, Some(r.metadata_location), big.as_bytes(), true);
        assert_eq!(gunzip_now(r.gzip_load_for(false), 1 << 20).unwrap(), plain);
        assert!(r.gzip_load_for(false).len() * 8 < plain.len());
        // The small refs rendering stays uncompressed.
        assert!(r.gzip_load_for(true).is_empty());

        let raw = add_compressed(record(b"{}", b""), FileForm::Plain, false, None);
        let r = Record::decode(&raw).unwrap();
        assert_eq!((r.file_bytes(), r.gzip_load_for(false)), (&b"{}"[..], &b""[..]));
    }
}
