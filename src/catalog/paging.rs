//! Keyset pagination for list operations.
//!
//! The page token is the hex of the last name returned: opaque to clients,
//! stable under concurrent inserts and deletes (no offsets), and it needs no
//! server-side state.

use crate::error::{ApiError, ApiResult};
use crate::http::percent::{decode, query_pairs};

/// What a list request asked for.
pub struct Page<'a> {
    /// Resume after this name (decoded from the token).
    pub after: Option<&'a [u8]>,
    /// Most results to return; `usize::MAX` when the client did not page.
    pub size: usize,
    /// Whether the response carries `next-page-token`.
    pub paged: bool,
}

impl<'a> Page<'a> {
    /// Reads `pageToken` and `pageSize` from a query string. Without either,
    /// everything comes in one response: clients that never page must still
    /// see every entry.
    pub fn from_query(
        query: &'a str,
        default_size: usize,
        max_size: usize,
        arena: &'a bumpalo::Bump,
    ) -> ApiResult<Page<'a>> {
        let mut page = Page { after: None, size: usize::MAX, paged: false };
        for (k, v) in query_pairs(query) {
            match k {
                "pageToken" => {
                    page.paged = true;
                    let token = decode(v, true, arena).map_err(|_| ApiError::bad_request("invalid pageToken"))?;
                    if !token.is_empty() {
                        page.after = Some(unhex(token, arena)?);
                    }
                }
                "pageSize" => {
                    let n: usize =
                        v.parse().map_err(|_| ApiError::bad_request("pageSize must be a positive integer"))?;
                    if n == 0 {
                        return Err(ApiError::bad_request("pageSize must be a positive integer"));
                    }
                    page.paged = true;
                    page.size = n.min(max_size);
                }
                _ => {}
            }
        }
        if page.paged && page.size == usize::MAX {
            page.size = default_size;
        }
        Ok(page)
    }
}

fn unhex<'a>(token: &str, arena: &'a bumpalo::Bump) -> ApiResult<&'a [u8]> {
    let bad = || ApiError::bad_request("invalid pageToken");
    if token.len() % 2 != 0 {
        return Err(bad());
    }
    let out = arena.alloc_slice_fill_copy(token.len() / 2, 0u8);
    for (i, pair) in token.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Ends a listing's array and object: `]`, then the next page token when
/// the client pages, then `}`.
pub fn close_listing(out: &mut Vec<u8>, paged: bool, last: Option<&[u8]>) {
    out.push(b']');
    if paged {
        out.push(b',');
        write_next_token(out, last);
    }
    out.push(b'}');
}

/// Writes `"next-page-token":"<hex>"` (or `null`).
pub fn write_next_token(out: &mut Vec<u8>, last: Option<&[u8]>) {
    out.extend_from_slice(b"\"next-page-token\":");
    match last {
        None => out.extend_from_slice(b"null"),
        Some(name) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(b'"');
            for b in name {
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaged_by_default() {
        let a = bumpalo::Bump::new();
        let p = Page::from_query("parent=x", 100, 1000, &a).unwrap();
        assert!(!p.paged && p.after.is_none() && p.size == usize::MAX);
    }

    #[test]
    fn token_round_trip() {
        let a = bumpalo::Bump::new();
        let mut out = Vec::new();
        write_next_token(&mut out, Some("ns\u{e9}".as_bytes()));
        let text = std::str::from_utf8(&out).unwrap();
        let token = text.split('"').nth(3).unwrap();
        let q = format!("pageToken={token}&pageSize=5");
        let p = Page::from_query(&q, 100, 1000, &a).unwrap();
        assert_eq!(p.after, Some("ns\u{e9}".as_bytes()));
        assert_eq!(p.size, 5);
        assert!(Page::from_query("pageToken=zz", 100, 1000, &a).is_err());
        assert!(Page::from_query("pageSize=0", 100, 1000, &a).is_err());
        assert_eq!(Page::from_query("pageToken=", 100, 1000, &a).unwrap().size, 100);
    }
}
