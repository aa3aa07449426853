//! How long a request body is: `Content-Length`, or chunked decoding.

/// Why a request cannot be framed; each maps to a status.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FramingError {
    /// Malformed or contradictory framing: 400.
    Malformed(&'static str),
    /// The body exceeds the limit: 413.
    TooLarge,
}

/// The body of a request, as its headers announce it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
}

/// Reads the framing headers. Both `Transfer-Encoding` and `Content-Length`
/// is refused: that ambiguity is how requests get smuggled.
pub fn framing(headers: &[httparse::Header<'_>], max_body: usize) -> Result<BodyFraming, FramingError> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| FramingError::Malformed("invalid Content-Length"))?;
            let text = text.trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::Malformed("invalid Content-Length"));
            }
            let n: usize = text.parse().map_err(|_| FramingError::TooLarge)?;
            if length.is_some_and(|prev| prev != n) {
                return Err(FramingError::Malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(h.value).unwrap_or("");
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(FramingError::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(FramingError::Malformed("both Transfer-Encoding and Content-Length")),
        (true, None) => Ok(BodyFraming::Chunked),
        (false, Some(n)) if n > max_body => Err(FramingError::TooLarge),
        (false, n) => Ok(BodyFraming::Length(n.unwrap_or(0))),
    }
}

/// Decodes a chunked body from `wire` into `out`. Returns the number of wire
/// bytes the body took once it is complete, `None` while more must be read.
pub fn decode_chunked(wire: &[u8], out: &mut Vec<u8>, max_body: usize) -> Result<Option<usize>, FramingError> {
    out.clear();
    let mut at = 0;
    loop {
        // httparse accepts a size line without digits; the grammar does not.
        match wire.get(at) {
            None => return Ok(None),
            Some(b) if !b.is_ascii_hexdigit() => return Err(FramingError::Malformed("invalid chunk size")),
            Some(_) => {}
        }
        let (size_len, size) = match httparse::parse_chunk_size(&wire[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(FramingError::Malformed("invalid chunk size")),
        };
        at += size_len;
        if size == 0 {
            return Ok(skip_trailers(&wire[at..]).map(|n| at + n));
        }
        let size = usize::try_from(size).map_err(|_| FramingError::TooLarge)?;
        if out.len().saturating_add(size) > max_body {
            return Err(FramingError::TooLarge);
        }
        if wire.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&wire[at..at + size]);
        at += size;
        if &wire[at..at + 2] != b"\r\n" {
            return Err(FramingError::Malformed("chunk not terminated by CRLF"));
        }
        at += 2;
    }
}

/// Skips the trailer section ending in an empty line; `None` if incomplete.
fn skip_trailers(wire: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = wire[at..].windows(2).position(|w| w == b"\r\n")?;
        at += line_end + 2;
        if line_end == 0 {
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header { name, value: value.as_bytes() }
    }

    #[test]
    fn content_length_and_limits() {
        assert_eq!(framing(&[h("Content-Length", "12")], 100), Ok(BodyFraming::Length(12)));
        assert_eq!(framing(&[], 100), Ok(BodyFraming::Length(0)));
        assert_eq!(framing(&[h("content-length", "101")], 100), Err(FramingError::TooLarge));
        assert!(matches!(framing(&[h("Content-Length", "-1")], 100), Err(FramingError::Malformed(_))));
        assert!(matches!(
            framing(&[h("Content-Length", "1"), h("Content-Length", "2")], 100),
            Err(FramingError::Malformed(_))
        ));
        assert_eq!(framing(&[h("Content-Length", "99999999999999999999999")], 100), Err(FramingError::TooLarge));
    }

    #[test]
    fn chunked_framing() {
        assert_eq!(framing(&[h("Transfer-Encoding", "chunked")], 100), Ok(BodyFraming::Chunked));
        assert!(matches!(framing(&[h("Transfer-Encoding", "gzip")], 100), Err(FramingError::Malformed(_))));
        let both = [h("Transfer-Encoding", "chunked"), h("Content-Length", "3")];
        assert!(matches!(framing(&both, 100), Err(FramingError::Malformed(_))));
    }

    #[test]
    fn decodes_chunks_with_trailers_and_leftovers() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut out = Vec::new();
        assert_eq!(decode_chunked(wire, &mut out, 100), Ok(Some(wire.len() - 4)));
        assert_eq!(out, b"Wikipedia");
    }

    #[test]
    fn incomplete_and_bad_chunks() {
        let mut out = Vec::new();
        assert_eq!(decode_chunked(b"4\r\nWi", &mut out, 100), Ok(None));
        assert_eq!(decode_chunked(b"4\r\nWiki\r\n0\r\n", &mut out, 100), Ok(None));
        assert!(matches!(decode_chunked(b"zz\r\n", &mut out, 100), Err(FramingError::Malformed(_))));
        assert!(matches!(decode_chunked(b"\r\n\r\n", &mut out, 100), Err(FramingError::Malformed(_))));
        assert!(matches!(decode_chunked(b";ext\r\n", &mut out, 100), Err(FramingError::Malformed(_))));
        assert!(matches!(decode_chunked(b"2\r\nabXX", &mut out, 100), Err(FramingError::Malformed(_))));
        assert_eq!(decode_chunked(b"10\r\n", &mut out, 8), Err(FramingError::TooLarge));
    }
}
