//! Small JSON writers for hand-built responses on the hot path.
//!
//! Building a few well-known shapes byte by byte into a pooled buffer avoids
//! any intermediate value and any heap allocation.

/// Writes `s` as a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes an unsigned integer in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a JSON array of strings.
pub fn write_str_array<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in ["plain", "quo\"te", "back\\slash", "nl\nx", "\u{1}\u{1f}", "ünïcødé", ""] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}

/// Why a JSON body was refused before parsing.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitError {
    TooDeep,
    StringTooLong,
}

/// Scans a JSON text for nesting depth and string length without parsing
/// it, so hostile bodies are refused before any parser recurses or copies.
/// Malformed JSON passes here and is rejected by the parser.
pub fn check_limits(body: &[u8], max_depth: usize, max_string: usize) -> Result<(), LimitError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(LimitError::TooDeep);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                if i.min(body.len()) - start > max_string {
                    return Err(LimitError::StringTooLong);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn depth_and_string_limits() {
        assert_eq!(check_limits(b"{\"a\":[1,{\"b\":\"x\"}]}", 3, 10), Ok(()));
        assert_eq!(check_limits(b"[[[[1]]]]", 3, 10), Err(LimitError::TooDeep));
        assert_eq!(check_limits(b"\"abcdefghijk\"", 3, 10), Err(LimitError::StringTooLong));
        // Brackets inside strings and escaped quotes do not count.
        assert_eq!(check_limits(b"{\"k\":\"[[[[\\\"]]]]\"}", 2, 20), Ok(()));
    }
}
