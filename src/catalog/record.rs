//! The stored form of a table or view: its current metadata location and
//! the metadata JSON itself, plus the `snapshots=refs` rendering when it
//! differs. Loading answers from these bytes without parsing them.
//!
//! Three optional trailing fields follow (`compressed.rs`): the exact bytes
//! of the metadata file when they are not the JSON (a gzip file), and the
//! gzip-compressed load answers (all snapshots, refs only) of a big object;
//! then, optional again, the chunk table of that gzip answer (`chunked.rs`).
//! A record without them (small objects, records from before) reads them as
//! empty; a reader that does not know them ignores them.

use crate::error::{ApiError, ApiResult};

const FORMAT: u8 = 1;

/// Borrowed view of a stored record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub metadata_location: &'a str,
    pub metadata: &'a [u8],
    /// The `snapshots=refs` rendering; empty when identical to `metadata`.
    pub refs_metadata: &'a [u8],
    /// The metadata file's bytes; empty when they are `metadata` itself.
    pub file: &'a [u8],
    /// The gzip `LoadTableResult`/`LoadViewResult` body; empty: not kept.
    pub gzip_load: &'a [u8],
    /// The same for `snapshots=refs`; empty when not kept or like `gzip_load`.
    pub gzip_load_refs: &'a [u8],
    /// Where `gzip_load`'s chunks are (`chunked.rs`); empty: not chunked.
    pub gzip_table: &'a [u8],
}

/// Encodes a record field by field (location, metadata, refs rendering),
/// each written in place: metadata is serialized straight into the record
/// instead of into a buffer of its own that is then copied.
pub struct RecordBuilder {
    buf: Vec<u8>,
}

impl RecordBuilder {
    /// `capacity` is a guess of the whole record's size; the buffer grows if short.
    pub fn with_capacity(capacity: usize) -> RecordBuilder {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(FORMAT);
        RecordBuilder { buf }
    }

    /// Appends the next field, as `write` writes it.
    pub fn field<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf)?;
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Appends a field of known bytes.
    pub fn bytes(&mut self, field: &[u8]) {
        self.buf.extend_from_slice(&(field.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(field);
    }

    /// The record so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn take<'a>(raw: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let bytes = raw.get(4..4 + len)?;
    *raw = &raw[4 + len..];
    Some(bytes)
}

impl<'a> Record<'a> {
    pub fn decode(raw: &'a [u8]) -> ApiResult<Record<'a>> {
        let corrupt = || ApiError::internal("stored record is corrupt");
        let (&format, mut rest) = raw.split_first().ok_or_else(corrupt)?;
        if format != FORMAT {
            return Err(corrupt());
        }
        let location = take(&mut rest).ok_or_else(corrupt)?;
        let metadata = take(&mut rest).ok_or_else(corrupt)?;
        let refs_metadata = take(&mut rest).ok_or_else(corrupt)?;
        let [file, gzip_load, gzip_load_refs] = if rest.is_empty() {
            [&[][..]; 3]
        } else {
            let mut next = || take(&mut rest).ok_or_else(corrupt);
            [next()?, next()?, next()?]
        };
        let gzip_table = if rest.is_empty() { &[][..] } else { take(&mut rest).ok_or_else(corrupt)? };
        Ok(Record {
            metadata_location: std::str::from_utf8(location).map_err(|_| corrupt())?,
            metadata,
            refs_metadata,
            file,
            gzip_load,
            gzip_load_refs,
            gzip_table,
        })
    }

    /// The bytes of the current metadata file.
    pub fn file_bytes(&self) -> &'a [u8] {
        if self.file.is_empty() {
            self.metadata
        } else {
            self.file
        }
    }

    /// The stored gzip load answer for a `snapshots` mode; empty when the
    /// object is too small to have one.
    pub fn gzip_load_for(&self, refs_only: bool) -> &'a [u8] {
        if refs_only && !self.refs_metadata.is_empty() {
            self.gzip_load_refs
        } else {
            self.gzip_load
        }
    }

    /// The metadata for a `snapshots` mode: all (default) or refs only.
    pub fn metadata_for(&self, refs_only: bool) -> &'a [u8] {
        if refs_only && !self.refs_metadata.is_empty() {
            self.refs_metadata
        } else {
            self.metadata
        }
    }
}

/// The version number a metadata file name starts with (`00042-<uuid>...`),
/// 0 when it has none (registered files may be named anything).
pub fn file_version(location: &str) -> u64 {
    let name = location.rsplit('/').next().unwrap_or("");
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    name[..digits].parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let location = "/w/t/metadata/00001-x.metadata.json";
        let mut b = RecordBuilder::with_capacity(0);
        for field in [location.as_bytes(), b"{\"a\":1}", b""] {
            b.bytes(field);
        }
        let raw = b.finish();
        let back = Record::decode(&raw).unwrap();
        assert_eq!(back.metadata_location, location);
        assert_eq!(back.metadata_for(true), b"{\"a\":1}");
        assert!(Record::decode(&raw[..raw.len() - 1]).is_err());
        assert_eq!((back.file_bytes(), back.gzip_load_for(false)), (&b"{\"a\":1}"[..], &b""[..]));
    }

    #[test]
    fn trailing_fields_are_read_when_present_and_must_be_whole() {
        let mut b = RecordBuilder::with_capacity(0);
        for field in [&b"/w/m.gz.metadata.json"[..], b"{}", b"{\"r\":1}", b"FILE", b"ALL", b"REFS"] {
            b.bytes(field);
        }
        let raw = b.finish();
        let back = Record::decode(&raw).unwrap();
        assert_eq!(back.file_bytes(), b"FILE");
        assert_eq!((back.gzip_load_for(false), back.gzip_load_for(true)), (&b"ALL"[..], &b"REFS"[..]));
        assert!(back.gzip_table.is_empty());
        assert!(Record::decode(&raw[..raw.len() - 1]).is_err());
        let mut b = RecordBuilder::with_capacity(0);
        for field in [&b"/w/m.json"[..], b"{}", b"", b"", b"ALL", b"", b"TABLE"] {
            b.bytes(field);
        }
        let raw = b.finish();
        assert_eq!(Record::decode(&raw).unwrap().gzip_table, b"TABLE");
        assert!(Record::decode(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn versions_from_file_names() {
        assert_eq!(file_version("/w/t/metadata/00042-abc.metadata.json"), 42);
        assert_eq!(file_version("s3://b/t/metadata/v3.metadata.json"), 0);
    }
}
