//! Just enough JSON to read a JWT's header and claims without allocating:
//! walk the members of the top-level object as raw slices, compare strings
//! with their escapes resolved on the fly, read integers.
//!
//! Callers parse claims only after the signature verified them, and the
//! header only to pick a key, so the walker is strict about what it reads
//! (strings, numbers, the top-level shape) and merely skips nested values.
//! It never panics and always terminates on any input.

/// A JSON text that is not what the walker expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bad;

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[i]` is `"`: the index just past the closing quote.
fn string_end(b: &[u8], mut i: usize) -> Result<usize, Bad> {
    i += 1;
    loop {
        match *b.get(i).ok_or(Bad)? {
            b'"' => return Ok(i + 1),
            b'\\' => match *b.get(i + 1).ok_or(Bad)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    hex4(b, i + 2).ok_or(Bad)?;
                    i += 6;
                }
                _ => return Err(Bad),
            },
            0..=0x1f => return Err(Bad),
            _ => i += 1,
        }
    }
}

/// The index just past the value starting at `b[i]`. Nested containers are
/// skipped by counting brackets outside strings.
fn value_end(b: &[u8], i: usize) -> Result<usize, Bad> {
    match *b.get(i).ok_or(Bad)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j).ok_or(Bad)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                    return Err(Bad);
                }
                j += 1;
            }
            if j == i {
                return Err(Bad);
            }
            Ok(j)
        }
    }
}

/// The members of a JSON object: `(raw key, raw value)`. The key is the
/// text between its quotes, escapes unresolved (compare with [`str_eq`]);
/// the value is its whole text (read with [`as_str`], [`as_u64`],
/// [`elements`]). Ends with an `Err` on malformed input.
pub fn members(json: &[u8]) -> Members<'_> {
    let i = ws(json, 0);
    match json.get(i) {
        Some(b'{') => Members { b: json, i: i + 1, state: State::First },
        _ => Members { b: json, i, state: State::Failed },
    }
}

/// A member: raw key text and raw value text.
pub type Member<'a> = (&'a [u8], &'a [u8]);

pub struct Members<'a> {
    b: &'a [u8],
    i: usize,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Next,
    Done,
    /// Malformed: the next call reports it.
    Failed,
    /// Malformed and reported: nothing more.
    Reported,
}

impl<'a> Members<'a> {
    fn step(&mut self) -> Result<Option<Member<'a>>, Bad> {
        let b = self.b;
        let mut i = ws(b, self.i);
        match self.state {
            State::Done | State::Failed | State::Reported => return Err(Bad),
            State::First if b.get(i) == Some(&b'}') => return self.finish(i + 1),
            State::First => {}
            State::Next => match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return self.finish(i + 1),
                _ => return Err(Bad),
            },
        }
        if b.get(i) != Some(&b'"') {
            return Err(Bad);
        }
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(Bad);
        }
        i = ws(b, i + 1);
        let end = value_end(b, i)?;
        let value = &b[i..end];
        self.i = end;
        self.state = State::Next;
        Ok(Some((key, value)))
    }

    fn finish(&mut self, i: usize) -> Result<Option<Member<'a>>, Bad> {
        if ws(self.b, i) != self.b.len() {
            return Err(Bad);
        }
        self.state = State::Done;
        Ok(None)
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<Member<'a>, Bad>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.state {
            State::Done | State::Reported => None,
            State::Failed => {
                self.state = State::Reported;
                Some(Err(Bad))
            }
            State::First | State::Next => match self.step() {
                Ok(m) => m.map(Ok),
                Err(e) => {
                    self.state = State::Reported;
                    Some(Err(e))
                }
            },
        }
    }
}

/// A raw string value's text between its quotes (escapes unresolved).
pub fn as_str(value: &[u8]) -> Option<&[u8]> {
    match value {
        [b'"', inner @ .., b'"'] => Some(inner),
        _ => None,
    }
}

/// A raw number as seconds: a non-negative integer, or a decimal whose
/// fraction is dropped (JWT NumericDate may carry one). No exponents.
pub fn as_u64(value: &[u8]) -> Option<u64> {
    let (int, frac) = match value.iter().position(|&c| c == b'.') {
        Some(p) => (&value[..p], &value[p + 1..]),
        None => (value, &b""[..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    if value.len() != int.len() && frac.is_empty() {
        return None;
    }
    int.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// The raw elements of an array value; `Err` if it is not a well-formed array.
pub fn elements(value: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), Bad> {
    if value.first() != Some(&b'[') {
        return Err(Bad);
    }
    let mut i = ws(value, 1);
    if value.get(i) == Some(&b']') {
        return if i + 1 == value.len() { Ok(()) } else { Err(Bad) };
    }
    loop {
        let end = value_end(value, i)?;
        each(&value[i..end]);
        i = ws(value, end);
        match value.get(i) {
            Some(b',') => i = ws(value, i + 1),
            Some(b']') if i + 1 == value.len() => return Ok(()),
            _ => return Err(Bad),
        }
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let h = b.get(i..i + 4)?;
    h.iter().try_fold(0u32, |n, &c| Some(n << 4 | (c as char).to_digit(16)?))
}

/// True when the raw JSON string text `raw` (between the quotes, escapes
/// unresolved) denotes exactly `expected`.
pub fn str_eq(raw: &[u8], expected: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let mut utf8 = [0u8; 4];
        let piece: &[u8] = if raw[i] == b'\\' {
            let Some(&e) = raw.get(i + 1) else {
                return false;
            };
            i += 2;
            match e {
                b'"' => b"\"",
                b'\\' => b"\\",
                b'/' => b"/",
                b'b' => b"\x08",
                b'f' => b"\x0c",
                b'n' => b"\n",
                b'r' => b"\r",
                b't' => b"\t",
                b'u' => {
                    let Some(hi) = hex4(raw, i) else { return false };
                    i += 4;
                    let cp = match hi {
                        0xD800..=0xDBFF => {
                            if raw.get(i..i + 2) != Some(b"\\u") {
                                return false;
                            }
                            let Some(lo @ 0xDC00..=0xDFFF) = hex4(raw, i + 2) else {
                                return false;
                            };
                            i += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        }
                        0xDC00..=0xDFFF => return false,
                        cp => cp,
                    };
                    let Some(c) = char::from_u32(cp) else {
                        return false;
                    };
                    c.encode_utf8(&mut utf8).as_bytes()
                }
                _ => return false,
            }
        } else {
            i += 1;
            &raw[i - 1..i]
        };
        if expected.get(j..j + piece.len()) != Some(piece) {
            return false;
        }
        j += piece.len();
    }
    j == expected.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(json: &str) -> Result<Vec<(String, String)>, Bad> {
        members(json.as_bytes())
            .map(|m| m.map(|(k, v)| (String::from_utf8_lossy(k).into(), String::from_utf8_lossy(v).into())))
            .collect()
    }

    #[test]
    fn walks_top_level_members() {
        let got = collect(r#" { "a" : "x\"}" , "b":[1,{"c":"]"}], "d" : {"e":[[]]},"n":-1.5e3,"t":true ,"z":null} "#)
            .unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d", "n", "t", "z"]);
        assert_eq!(got[0].1, r#""x\"}""#);
        assert_eq!(got[1].1, r#"[1,{"c":"]"}]"#);
        assert_eq!(got[3].1, "-1.5e3");
        assert_eq!(collect("{}").unwrap(), vec![]);
    }

    #[test]
    fn malformed_objects_fail_and_stop() {
        for bad in [
            "",
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":1}x",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\q\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":[1,2}",
            "{\"a\":\"open}",
            "{a:1}",
            "{\"a\":@}",
        ] {
            assert_eq!(collect(bad), Err(Bad), "{bad:?}");
            let mut it = members(bad.as_bytes());
            let mut n = 0;
            while it.next().is_some() {
                n += 1;
                assert!(n < 10, "no end on {bad:?}");
            }
        }
    }

    #[test]
    fn string_equality_resolves_escapes() {
        assert!(str_eq(b"https:\\/\\/idp.example", b"https://idp.example"));
        assert!(str_eq(b"a\\u0062c", b"abc"));
        assert!(str_eq(b"\\u00e9", "é".as_bytes()));
        assert!(str_eq(b"\\ud83d\\ude00", "😀".as_bytes()));
        assert!(str_eq(b"q\\\"\\\\", b"q\"\\"));
        assert!(str_eq(b"", b""));
        assert!(!str_eq(b"abc", b"abcd"));
        assert!(!str_eq(b"abcd", b"abc"));
        assert!(!str_eq(b"\\ud83d", "😀".as_bytes()));
        assert!(!str_eq(b"\\ude00", b"?"));
        assert!(!str_eq(b"\\", b"\\"));
        assert!(!str_eq(b"\\x41", b"A"));
    }

    #[test]
    fn numbers_and_arrays() {
        assert_eq!(as_u64(b"1700000000"), Some(1_700_000_000));
        assert_eq!(as_u64(b"1700000000.75"), Some(1_700_000_000));
        assert_eq!(as_u64(b"0"), Some(0));
        for bad in [&b"-1"[..], b"1e9", b"01", b"", b"1.", b".5", b"\"1\"", b"99999999999999999999999", b"true"] {
            assert_eq!(as_u64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(as_str(b"\"ab\""), Some(&b"ab"[..]));
        assert_eq!(as_str(b"12"), None);
        let mut seen = vec![];
        elements(br#"[ "a", "b\"" ,{"x":[1]} ]"#, |e| seen.push(String::from_utf8_lossy(e).into_owned())).unwrap();
        assert_eq!(seen, [r#""a""#, r#""b\"""#, r#"{"x":[1]}"#]);
        assert!(elements(b"[]", |_| panic!()).is_ok());
        for bad in [&b"\"a\""[..], b"[", b"[1,]", b"[1 2]", b"[1]]"] {
            assert!(elements(bad, |_| {}).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
