//! `Accept-Encoding` (RFC 9110 §12.5.3), as far as choosing gzip needs.

/// Whether an `Accept-Encoding` value accepts `gzip`: named (or as `x-gzip`)
/// with a non-zero q-value, or not named and covered by a `*` with a
/// non-zero q-value. `gzip;q=0` refuses it whatever `*` says. No allocation.
pub fn accepts_gzip(value: &[u8]) -> bool {
    let mut named = None;
    let mut star = false;
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let coding = parts.next().unwrap_or_default().trim_ascii();
        let mut q = true;
        for param in parts {
            let param = param.trim_ascii();
            if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
                q = q_positive(param[2..].trim_ascii());
            }
        }
        if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            named = Some(named.unwrap_or(false) || q);
        } else if coding == b"*" {
            star = q;
        }
    }
    named.unwrap_or(star)
}

/// Whether a q-value (`0`, `0.5`, `1.000`) is above zero; a malformed one
/// counts as zero (the coding is not accepted).
fn q_positive(q: &[u8]) -> bool {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &[][..]),
    };
    let well_formed = matches!(int, b"0" | b"1")
        && frac.len() <= 3
        && frac.iter().all(u8::is_ascii_digit)
        && (int == b"0" || frac.iter().all(|&d| d == b'0'));
    well_formed && (int == b"1" || frac.iter().any(|&d| d != b'0'))
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_chosen_by_name_star_and_q_values() {
        for yes in [
            &b"gzip"[..],
            b"gzip, deflate",
            b"gzip, deflate, br, zstd",
            b"deflate, GZIP;q=0.5",
            b"x-gzip",
            b"*",
            b"br;q=1.0, *;q=0.1",
            b"gzip;q=1.000",
            b"gzip ; q=0.001",
            b"gzip;Q=0.9",
        ] {
            assert!(accepts_gzip(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"identity",
            b"deflate, br",
            b"gzip;q=0",
            b"gzip;q=0.000",
            b"gzip;q=0, *",
            b"*;q=0",
            b"*;q=0.0, deflate",
            b"gzip;q=2",
            b"gzip;q=abc",
            b"gzip;q=0.0001",
            b"gzipx",
        ] {
            assert!(!accepts_gzip(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
