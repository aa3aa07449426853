//! Percent-decoding of path segments and query strings.

/// Why decoding failed.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, as in query
/// strings) into `arena`, returning the text; borrows `s` when nothing needs
/// decoding.
pub fn decode<'a>(s: &'a str, plus_is_space: bool, arena: &'a bumpalo::Bump) -> Result<&'a str, DecodeError> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(s);
    }
    let mut out = bumpalo::collections::Vec::with_capacity_in(bytes.len(), arena);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(DecodeError::BadEscape),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let out = out.into_bump_slice();
    std::str::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// Iterates the `name=value` pairs of a query string, still encoded.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        let a = bumpalo::Bump::new();
        assert_eq!(decode("a%1Fb", false, &a).unwrap(), "a\u{1f}b");
        assert_eq!(decode("a+b%20c", true, &a).unwrap(), "a b c");
        assert_eq!(decode("a+b", false, &a).unwrap(), "a+b");
        assert_eq!(decode("%C3%A9t%C3%A9", false, &a).unwrap(), "été");
        assert_eq!(decode("plain", false, &a).unwrap(), "plain");
    }

    #[test]
    fn rejects_bad_input() {
        let a = bumpalo::Bump::new();
        assert_eq!(decode("a%1", false, &a), Err(DecodeError::BadEscape));
        assert_eq!(decode("a%zz", false, &a), Err(DecodeError::BadEscape));
        assert_eq!(decode("%FF%FE", false, &a), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn splits_query_pairs() {
        let pairs: Vec<_> = query_pairs("a=1&b=&c&&d=x=y").collect();
        assert_eq!(pairs, vec![("a", "1"), ("b", ""), ("c", ""), ("d", "x=y")]);
    }
}
