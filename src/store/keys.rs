//! Key layout: one byte for the kind of record, then the identifier.
//!
//! Namespace parts are joined by 0x1F and names end the namespace with 0x00;
//! identifiers never contain control characters (the catalog rejects them),
//! so keys never collide and sort as the listings need.

/// Namespace: `N`, depth as one byte, parts joined by 0x1F.
/// The depth byte makes "direct children of P" one contiguous prefix.
pub const NAMESPACE: u8 = b'N';
/// Table: `T`, namespace parts joined by 0x1F, 0x00, name.
pub const TABLE: u8 = b'T';
/// View: `V`, namespace parts joined by 0x1F, 0x00, name.
pub const VIEW: u8 = b'V';
/// Idempotency record: `I`, key.
pub const IDEMPOTENCY: u8 = b'I';

pub const PART_SEP: u8 = 0x1f;
pub const NAME_SEP: u8 = 0x00;

fn push_parts<'a>(out: &mut Vec<u8>, parts: impl IntoIterator<Item = &'a str>) {
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(PART_SEP);
        }
        out.extend_from_slice(p.as_bytes());
    }
}

/// Key of a namespace.
pub fn namespace(out: &mut Vec<u8>, parts: &[&str]) {
    debug_assert!(!parts.is_empty() && parts.len() < 256);
    out.push(NAMESPACE);
    out.push(parts.len() as u8);
    push_parts(out, parts.iter().copied());
}

/// Prefix of the direct children of `parent` (empty: top level).
pub fn namespace_children(out: &mut Vec<u8>, parent: &[&str]) {
    out.push(NAMESPACE);
    out.push(parent.len() as u8 + 1);
    if !parent.is_empty() {
        push_parts(out, parent.iter().copied());
        out.push(PART_SEP);
    }
}

/// Key of a table or view (`kind` is [`TABLE`] or [`VIEW`]).
pub fn object(out: &mut Vec<u8>, kind: u8, namespace: &[&str], name: &str) {
    object_prefix(out, kind, namespace);
    out.extend_from_slice(name.as_bytes());
}

/// Prefix of all tables or views of a namespace.
pub fn object_prefix(out: &mut Vec<u8>, kind: u8, namespace: &[&str]) {
    out.push(kind);
    push_parts(out, namespace.iter().copied());
    out.push(NAME_SEP);
}

/// The last part of a namespace key, or the name of an object key.
pub fn last_component(key: &[u8]) -> &[u8] {
    let start = key.iter().rposition(|&b| b == PART_SEP || b == NAME_SEP).map_or(2, |i| i + 1);
    &key[start.min(key.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_prefix_matches_only_direct_children() {
        let mut child = Vec::new();
        namespace(&mut child, &["a", "b"]);
        let mut grandchild = Vec::new();
        namespace(&mut grandchild, &["a", "b", "c"]);
        let mut prefix = Vec::new();
        namespace_children(&mut prefix, &["a"]);
        assert!(child.starts_with(&prefix));
        assert!(!grandchild.starts_with(&prefix));
        assert_eq!(last_component(&child), b"b");
    }

    #[test]
    fn top_level_children() {
        let mut top = Vec::new();
        namespace(&mut top, &["a"]);
        let mut prefix = Vec::new();
        namespace_children(&mut prefix, &[]);
        assert!(top.starts_with(&prefix));
        assert_eq!(last_component(&top), b"a");
    }

    #[test]
    fn tables_of_a_namespace_do_not_include_nested_ones() {
        let mut t = Vec::new();
        object(&mut t, TABLE, &["a"], "t");
        let mut nested = Vec::new();
        object(&mut nested, TABLE, &["a", "b"], "t");
        let mut prefix = Vec::new();
        object_prefix(&mut prefix, TABLE, &["a"]);
        assert!(t.starts_with(&prefix));
        assert!(!nested.starts_with(&prefix));
        assert_eq!(last_component(&t), b"t");
    }
}
