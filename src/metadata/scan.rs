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

/// The end of the string whose opening quote is at `at`.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The end of the object or array opening at `at`: brackets are counted
/// outside strings.
fn nested_end(json: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i = string_end(json, i)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
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
}
