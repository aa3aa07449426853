//! A scanner over JSON text this catalog stored: it finds where values start
//! and end without building them, so a commit can keep what it does not
//! change as slices of the stored bytes. It expects valid JSON (the stored
//! metadata was parsed before it was stored) and answers `None` at anything
//! else; it allocates nothing.

/// The end (exclusive) of the JSON value starting at `at`.
pub(crate) fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match *json.get(at)? {
        b'"' => string_end(json, at),
        b'{' | b'[' => nested_end(json, at),
        _ => {
            let len = json[at..].iter().position(|&b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'));
            Some(at + len.unwrap_or(json.len() - at))
        }
    }
}

/// The end of the string whose opening quote is at `at`. Stored strings
/// are short (keys, names, numbers as text): a plain loop beats a
/// vectorized search's setup for each.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match *json.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Bytes a nested value's end depends on: quotes, escapes, brackets.
fn special(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | b'{' | b'}' | b'[' | b']')
}

/// Which of the 16 bytes at `block` are [`special`], as a bit mask.
#[cfg(target_arch = "x86_64")]
fn specials(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of every x86_64 CPU; the load reads the 16 bytes of `block`.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        // `[` and `]` differ from `{` and `}` only in bit 5, which no other byte shares with them.
        let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let brackets = _mm_or_si128(
            _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)),
            _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)),
        );
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(eq(b'"'), eq(b'\\')), brackets)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn specials(block: &[u8; 16]) -> u32 {
    specials_in(block)
}

/// [`specials`] of up to 32 bytes, one at a time.
fn specials_in(bytes: &[u8]) -> u32 {
    bytes.iter().enumerate().filter(|(_, &b)| special(b)).fold(0, |m, (k, _)| m | 1 << k)
}

/// The end of the object or array starting at `at`. A 6 MB document of
/// 10,000 snapshots is mostly short strings between brackets: its bytes
/// are looked at 16 at a time and only the special ones visited (a byte
/// loop with a search per string took ~7 ms, much of a big commit's CPU).
fn nested_end(json: &[u8], at: usize) -> Option<usize> {
    let (mut depth, mut in_string) = (0usize, false);
    // The first byte not yet visited.
    let mut i = at;
    let mut block = at;
    while block < json.len() {
        let mut mask = match json.get(block..block + 16) {
            Some(b) => specials(b.try_into().expect("16 bytes")),
            None => specials_in(&json[block..]),
        };
        while mask != 0 {
            let pos = block + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if pos < i {
                continue;
            }
            i = pos + 1;
            match (json[pos], in_string) {
                (b'"', _) => in_string = !in_string,
                // The escaped byte is not special, whatever it is.
                (b'\\', true) => i = pos + 2,
                (_, true) => {}
                (b'{' | b'[', false) => depth += 1,
                (b'}' | b']', false) => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(pos + 1);
                    }
                }
                _ => return None,
            }
        }
        block += 16;
    }
    None
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The members of a JSON object (`json[at]` is its `{`): each key's raw
/// text without quotes and the range of its value.
pub(crate) struct Fields<'a> {
    json: &'a [u8],
    at: usize,
    done: bool,
}

/// The members of the object that starts at `at`.
pub(crate) fn fields(json: &[u8], at: usize) -> Fields<'_> {
    let ok = json.get(at) == Some(&b'{');
    Fields { json, at: at + 1, done: !ok }
}

impl<'a> Iterator for Fields<'a> {
    /// `None` inside: the text is not an object of this shape.
    type Item = Option<(&'a [u8], std::ops::Range<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let json = self.json;
        let mut at = skip_space(json, self.at);
        if json.get(at) == Some(&b',') {
            at = skip_space(json, at + 1);
        }
        match json.get(at) {
            Some(b'}') => {
                self.done = true;
                return None;
            }
            Some(b'"') => {}
            _ => {
                self.done = true;
                return Some(None);
            }
        }
        let member = (|| {
            let key_end = string_end(json, at)?;
            let colon = skip_space(json, key_end);
            (json.get(colon) == Some(&b':')).then_some(())?;
            let start = skip_space(json, colon + 1);
            let end = value_end(json, start)?;
            Some((&json[at + 1..key_end - 1], start..end))
        })();
        match &member {
            Some((_, range)) => self.at = range.end,
            None => self.done = true,
        }
        Some(member)
    }
}

/// The elements of a JSON array (`json[at]` is its `[`), as ranges.
pub(crate) struct Elements<'a> {
    json: &'a [u8],
    at: usize,
    done: bool,
}

/// The elements of the array that starts at `at`.
pub(crate) fn elements(json: &[u8], at: usize) -> Elements<'_> {
    let ok = json.get(at) == Some(&b'[');
    Elements { json, at: at + 1, done: !ok }
}

impl Iterator for Elements<'_> {
    /// `None` inside: the text is not an array.
    type Item = Option<std::ops::Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let json = self.json;
        let mut at = skip_space(json, self.at);
        if json.get(at) == Some(&b',') {
            at = skip_space(json, at + 1);
        }
        if json.get(at) == Some(&b']') {
            self.done = true;
            return None;
        }
        match value_end(json, at) {
            Some(end) => {
                self.at = end;
                Some(Some(at..end))
            }
            None => {
                self.done = true;
                Some(None)
            }
        }
    }
}

/// The raw value of member `key` of the object `object` (its whole text).
pub(crate) fn member<'a>(object: &'a [u8], key: &str) -> Option<&'a [u8]> {
    fields(object, 0).map_while(|f| f).find(|(k, _)| *k == key.as_bytes()).map(|(_, r)| &object[r])
}

/// Member `key` of `object` read as an integer.
pub(crate) fn int_member(object: &[u8], key: &str) -> Option<i64> {
    std::str::from_utf8(member(object, key)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_elements_of_stored_json() {
        let json = br#"{"a":1,"s":"x\"}]\\","o":{"k":[1,{"z":"]"}]},"l":[ 2 , "3" ],"n":null}"#;
        let keys: Vec<(&[u8], &[u8])> = fields(json, 0).map(|f| f.unwrap()).map(|(k, r)| (k, &json[r])).collect();
        assert_eq!(
            keys,
            [
                (&b"a"[..], &b"1"[..]),
                (b"s", br#""x\"}]\\""#),
                (b"o", br#"{"k":[1,{"z":"]"}]}"#),
                (b"l", br#"[ 2 , "3" ]"#),
                (b"n", b"null")
            ]
        );
        let list = member(json, "l").unwrap();
        let items: Vec<&[u8]> = elements(list, 0).map(|e| &list[e.unwrap()]).collect();
        assert_eq!(items, [&b"2"[..], b"\"3\""]);
        assert_eq!(int_member(json, "a"), Some(1));
        assert_eq!(elements(b"[]", 0).count(), 0);
        assert_eq!(fields(b"{ }", 0).count(), 0);
        // Broken text ends the iteration with a None, never a panic.
        assert_eq!(fields(br#"{"a":"#, 0).last(), Some(None));
        assert_eq!(elements(br#"["a"#, 0).last(), Some(None));
        assert!(member(b"[1]", "a").is_none());
    }

    /// A random JSON value: nested objects and arrays, strings with escapes
    /// (of quotes, backslashes, brackets) and numbers.
    fn value(rng: &mut u64, depth: u32, out: &mut Vec<u8>) {
        let mut next = |n: u64| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng % n
        };
        match if depth > 4 { 2 + next(2) } else { next(4) } {
            0 | 1 => {
                let object = next(2) == 0;
                out.push(if object { b'{' } else { b'[' });
                for k in 0..next(6) {
                    if k > 0 {
                        out.push(b',');
                    }
                    if object {
                        out.extend_from_slice(b"\"k\":");
                    }
                    value(rng, depth + 1, out);
                }
                out.push(if object { b'}' } else { b']' });
            }
            2 => {
                out.push(b'"');
                for _ in 0..next(40) {
                    let pieces: [&[u8]; 8] = [b"a", b"\\\"", b"\\\\", b"{", b"]", b"[}", b"\\u005d", b"xyz0123456789"];
                    out.extend_from_slice(pieces[next(8) as usize]);
                }
                out.push(b'"');
            }
            _ => out.extend_from_slice(b"-12.5e3"),
        }
    }

    #[test]
    fn nested_values_end_where_they_end_at_any_alignment() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..2000 {
            let mut json = b" ".repeat(case % 17);
            let at = json.len();
            json.push(b'[');
            value(&mut rng, 0, &mut json);
            json.push(b']');
            let end = json.len();
            json.extend_from_slice(if case % 2 == 0 { &b",\"t\":[1]}"[..] } else { b"" });
            assert_eq!(nested_end(&json, at), Some(end), "{}", String::from_utf8_lossy(&json));
            // Cut short: no end, never a panic.
            assert_eq!(nested_end(&json[..end - 1], at), None);
        }
    }
}
