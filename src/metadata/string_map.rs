//! A JSON object of strings held in one buffer: a snapshot's summary.
//!
//! A `BTreeMap<String, String>` costs two allocations per entry, and an
//! append's summary has about fifteen entries, which made it most of a
//! commit's allocations. Here the keys and values are copied back to back
//! into one `String`, with one vector of offsets kept in key order; it reads
//! and writes the same JSON as the map did (keys sorted, the last of
//! duplicate keys kept).

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes reserved for the text at first: a Spark append's summary fits.
const TEXT_CAPACITY: usize = 640;

#[derive(Clone, Default)]
pub struct StringMap {
    /// Every key and value, back to back, in the order they were read.
    text: String,
    /// Per entry, sorted by key: where its key starts, its key ends (and its
    /// value starts), and its value ends in `text`.
    entries: Vec<(u32, u32, u32)>,
}

impl StringMap {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|&(k, v, end)| (&self.text[k as usize..v as usize], &self.text[v as usize..end as usize]))
    }

    fn key(&self, entry: (u32, u32, u32)) -> &str {
        &self.text[entry.0 as usize..entry.1 as usize]
    }

    /// Sorts the entries read by key, keeping the last of equal keys.
    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        // Stable: equal keys stay in reading order, so the last one is kept.
        entries.sort_by(|a, b| self.key(*a).cmp(self.key(*b)));
        entries.dedup_by(|later, earlier| {
            let same = self.key(*later) == self.key(*earlier);
            if same {
                *earlier = *later;
            }
            same
        });
        self.entries = entries;
    }
}

impl PartialEq for StringMap {
    fn eq(&self, other: &StringMap) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for StringMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StringMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StringMap, D::Error> {
        deserializer.deserialize_map(MapVisitor)
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = StringMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StringMap, A::Error> {
        let mut map = StringMap {
            text: String::with_capacity(TEXT_CAPACITY),
            entries: Vec::with_capacity(access.size_hint().unwrap_or(16)),
        };
        let offset = |text: &String| u32::try_from(text.len()).map_err(|_| serde::de::Error::custom("map too large"));
        loop {
            let start = offset(&map.text)?;
            if access.next_key_seed(AppendStr(&mut map.text))?.is_none() {
                break;
            }
            let key_end = offset(&map.text)?;
            access.next_value_seed(AppendStr(&mut map.text))?;
            map.entries.push((start, key_end, offset(&map.text)?));
        }
        map.sort();
        Ok(map)
    }
}

/// Reads a string onto the end of a buffer, borrowed or not: no allocation
/// of its own.
struct AppendStr<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for AppendStr<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for AppendStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.0.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn both(json: &str) -> (StringMap, BTreeMap<String, String>) {
        (sonic_rs::from_str(json).unwrap(), sonic_rs::from_str(json).unwrap())
    }

    #[test]
    fn reads_and_writes_what_a_btreemap_does() {
        for json in [
            r#"{}"#,
            r#"{"operation":"append","added-files":"4","b":"","a":"\u00e9\"x"}"#,
            r#"{"k":"first","a":"1","k":"last"}"#,
        ] {
            let (ours, map) = both(json);
            assert_eq!(sonic_rs::to_string(&ours).unwrap(), sonic_rs::to_string(&map).unwrap(), "{json}");
            assert!(ours.iter().eq(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
            assert_eq!(ours.is_empty(), map.is_empty());
        }
        let (ours, _) = both(r#"{"operation":"append","k":"a","k":"b"}"#);
        assert_eq!(ours.iter().collect::<Vec<_>>(), [("k", "b"), ("operation", "append")]);
    }

    #[test]
    fn equal_whatever_the_order_read() {
        let a: StringMap = sonic_rs::from_str(r#"{"a":"1","b":"2"}"#).unwrap();
        let b: StringMap = sonic_rs::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        let c: StringMap = sonic_rs::from_str(r#"{"a":"1","b":"3"}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn values_must_be_strings() {
        for json in [r#"{"a":1}"#, r#"{"a":null}"#, r#"["a"]"#, r#"{"a":{"b":"c"}}"#] {
            assert!(sonic_rs::from_str::<StringMap>(json).is_err(), "{json}");
        }
    }
}
