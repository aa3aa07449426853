//! HTTP/1.1 client framing shared by the async and blocking clients: writing a
//! request into a reusable buffer and finding complete responses in a read
//! buffer. Pure functions over byte slices, so they are unit-testable.

use std::io::{self, Write};
use std::ops::Range;

/// Most catalog responses carry fewer headers than this; more is a protocol error.
const MAX_HEADERS: usize = 32;

/// One complete response found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Where the (de-chunked) body sits in the buffer.
    pub body: Range<usize>,
    /// Bytes of the buffer this response used; anything after is the next
    /// (pipelined) response.
    pub consumed: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Appends a request to `out` (which the caller clears). No allocation once
/// `out` has grown to the largest request.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(token) = token {
        let _ = write!(out, "Authorization: Bearer {token}\r\n");
    }
    match body {
        Some(body) => {
            let _ = write!(out, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Looks for one complete response at the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed. `eof` says the peer closed,
/// which completes a close-delimited body. A chunked body is de-chunked in
/// place so callers always see one contiguous body slice. Interim 1xx
/// responses are skipped.
pub fn parse_response(buf: &mut [u8], head_request: bool, eof: bool) -> io::Result<Option<Response>> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("malformed response head")),
        };
        let status = parsed.code.unwrap_or(0);
        let http10 = parsed.version == Some(0);
        let mut framing = None;
        let mut close = http10;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .ok_or_else(|| invalid("bad content-length"))?;
                framing.get_or_insert(Framing::Length(n));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked wins over Content-Length (RFC 9112 6.3).
                if contains_token(h.value, b"chunked") {
                    framing = Some(Framing::Chunked);
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                if contains_token(h.value, b"close") {
                    close = true;
                } else if contains_token(h.value, b"keep-alive") {
                    close = false;
                }
            }
        }
        let body_start = start + head_len;
        if (100..200).contains(&status) && status != 101 {
            start = body_start;
            continue;
        }
        let framing = if head_request || status == 204 || status == 304 || status < 200 {
            Framing::Empty
        } else {
            framing.unwrap_or(Framing::UntilClose)
        };
        let rest = &mut buf[body_start..];
        let (body_len, used) = match framing {
            Framing::Empty => (0, 0),
            Framing::Length(n) if rest.len() >= n => (n, n),
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match scan_chunked(rest)? {
                Some(used) => (dechunk(rest), used),
                None => return Ok(None),
            },
            Framing::UntilClose if eof => (rest.len(), rest.len()),
            Framing::UntilClose => return Ok(None),
        };
        return Ok(Some(Response {
            status,
            body: body_start..body_start + body_len,
            consumed: body_start + used,
            close: close || framing == Framing::UntilClose,
        }));
    }
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Reads one CRLF-terminated line at `pos`; returns the line and the index
/// after its CRLF.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[pos..pos + rel], pos + rel + 2))
}

fn chunk_size(line: &[u8]) -> io::Result<usize> {
    let hex = line.split(|&b| b == b';').next().unwrap_or(line).trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(invalid("bad chunk size"));
    }
    hex.iter().try_fold(0usize, |acc, &b| {
        let d = (b as char).to_digit(16).ok_or_else(|| invalid("bad chunk size"))?;
        Ok(acc * 16 + d as usize)
    })
}

/// Checks a chunked body is complete; returns the bytes it occupies
/// (including the trailer section).
fn scan_chunked(buf: &[u8]) -> io::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        let Some((line, next)) = line_at(buf, pos) else {
            return Ok(None);
        };
        let size = chunk_size(line)?;
        if size == 0 {
            // Trailer fields, then an empty line.
            let mut pos = next;
            loop {
                let Some((line, next)) = line_at(buf, pos) else {
                    return Ok(None);
                };
                if line.is_empty() {
                    return Ok(Some(next));
                }
                pos = next;
            }
        }
        let end = next + size;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(invalid("chunk without CRLF"));
        }
        pos = end + 2;
    }
}

/// Moves the chunk payloads of a complete (already scanned) chunked body to
/// the front of `buf`; returns the body length.
fn dechunk(buf: &mut [u8]) -> usize {
    let (mut read, mut write) = (0, 0);
    while let Some((line, next)) = line_at(buf, read) {
        let size = chunk_size(line).unwrap_or(0);
        if size == 0 {
            break;
        }
        buf.copy_within(next..next + size, write);
        write += size;
        read = next + size + 2;
    }
    write
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Option<(Response, Vec<u8>)> {
        let mut buf = raw.to_vec();
        let r = parse_response(&mut buf, false, false).unwrap()?;
        let body = buf[r.body.clone()].to_vec();
        Some((r, body))
    }

    #[test]
    fn content_length_and_partial() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert!(parse(&raw[..cut]).is_none(), "cut at {cut}");
        }
        let (r, body) = parse(raw).unwrap();
        assert_eq!((r.status, r.consumed, r.close), (200, raw.len(), false));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_is_dechunked_in_place() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..raw.len() {
            assert!(parse(&raw[..cut]).is_none(), "cut at {cut}");
        }
        let (r, body) = parse(raw).unwrap();
        assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.");
        assert_eq!(r.consumed, raw.len());
    }

    #[test]
    fn pipelined_leftovers_stay_after_consumed() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let two = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut buf = [one.as_slice(), two.as_slice()].concat();
        let r = parse_response(&mut buf, false, false).unwrap().unwrap();
        assert_eq!(r.consumed, one.len());
        let r2 = parse_response(&mut buf[r.consumed..], false, false).unwrap().unwrap();
        assert_eq!((r2.status, r2.consumed), (404, two.len()));
    }

    #[test]
    fn bodiless_statuses_and_head() {
        // 204/304 and HEAD responses may carry Content-Length but no body.
        for raw in [&b"HTTP/1.1 204 No Content\r\n\r\n"[..], b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"]
        {
            let (r, body) = parse(raw).unwrap();
            assert!(body.is_empty());
            assert_eq!(r.consumed, raw.len());
        }
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec();
        let r = parse_response(&mut head, true, false).unwrap().unwrap();
        assert_eq!((r.body.len(), r.consumed), (0, head.len()));
    }

    #[test]
    fn interim_close_and_errors() {
        let (r, body) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        )
        .unwrap();
        assert_eq!((r.status, r.close, body.as_slice()), (201, true, &b"x"[..]));
        let mut until_close = b"HTTP/1.1 200 OK\r\n\r\nabc".to_vec();
        assert!(parse_response(&mut until_close, false, false).unwrap().is_none());
        let r = parse_response(&mut until_close, false, true).unwrap().unwrap();
        assert!(r.close && r.body.len() == 3);
        let mut bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec();
        assert!(parse_response(&mut bad, false, false).is_err());
        let mut garbage = b"NOT HTTP\r\n\r\n".to_vec();
        assert!(parse_response(&mut garbage, false, false).is_err());
    }

    #[test]
    fn request_bytes() {
        let mut out = Vec::new();
        write_request(&mut out, "POST", "/v1/x", "h:1", Some("t"), Some(b"{}"));
        assert_eq!(
            out,
            b"POST /v1/x HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer t\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}
