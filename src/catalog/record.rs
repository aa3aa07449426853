//! The stored form of a table or view: its current metadata location and
//! the metadata JSON itself, exactly as written to that file, plus the
//! `snapshots=refs` rendering when it differs. Loading answers from these
//! bytes without parsing them.

use crate::error::{ApiError, ApiResult};

const FORMAT: u8 = 1;

/// Borrowed view of a stored record.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub metadata_location: &'a str,
    pub metadata: &'a [u8],
    /// The `snapshots=refs` rendering; empty when identical to `metadata`.
    pub refs_metadata: &'a [u8],
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(raw: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let bytes = raw.get(4..4 + len)?;
    *raw = &raw[4 + len..];
    Some(bytes)
}

impl<'a> Record<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.metadata_location.len() + self.metadata.len() + self.refs_metadata.len());
        out.push(FORMAT);
        put(&mut out, self.metadata_location.as_bytes());
        put(&mut out, self.metadata);
        put(&mut out, self.refs_metadata);
        out
    }

    pub fn decode(raw: &'a [u8]) -> ApiResult<Record<'a>> {
        let corrupt = || ApiError::internal("stored record is corrupt");
        let (&format, mut rest) = raw.split_first().ok_or_else(corrupt)?;
        if format != FORMAT {
            return Err(corrupt());
        }
        let location = take(&mut rest).ok_or_else(corrupt)?;
        let metadata = take(&mut rest).ok_or_else(corrupt)?;
        let refs_metadata = take(&mut rest).ok_or_else(corrupt)?;
        Ok(Record { metadata_location: std::str::from_utf8(location).map_err(|_| corrupt())?, metadata, refs_metadata })
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
        let r = Record {
            metadata_location: "/w/t/metadata/00001-x.metadata.json",
            metadata: b"{\"a\":1}",
            refs_metadata: b"",
        };
        let raw = r.encode();
        let back = Record::decode(&raw).unwrap();
        assert_eq!(back.metadata_location, r.metadata_location);
        assert_eq!(back.metadata_for(true), b"{\"a\":1}");
        assert!(Record::decode(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn versions_from_file_names() {
        assert_eq!(file_version("/w/t/metadata/00042-abc.metadata.json"), 42);
        assert_eq!(file_version("s3://b/t/metadata/v3.metadata.json"), 0);
    }
}
