//! Key layout: one byte for the kind of record, then the identifier.
//!
//! Every key of the default warehouse is laid out that way (as before there
//! were several). Each other warehouse's keys are the same keys behind a
//! keyspace: `W`, the warehouse's name, 0x00 (`store::Keyspace` adds and
//! strips it); names never contain 0x00, and no default-warehouse key starts
//! with `W`, so keyspaces never overlap.
//!
//! Namespace parts are joined by 0x1F and names end the namespace with 0x00;
//! identifiers never contain control characters (the catalog rejects them),
//! so keys never collide and sort as the listings need. Keys are built in the
//! request's arena.

use bumpalo::collections::Vec as BumpVec;
use bumpalo::Bump;

/// Namespace: `N`, depth as one byte, parts joined by 0x1F.
/// The depth byte makes "direct children of P" one contiguous prefix.
pub const NAMESPACE: u8 = b'N';
/// Table: `T`, namespace parts joined by 0x1F, 0x00, name.
pub const TABLE: u8 = b'T';
/// View: `V`, namespace parts joined by 0x1F, 0x00, name.
pub const VIEW: u8 = b'V';
/// Idempotency record: `I`, key.
pub const IDEMPOTENCY: u8 = b'I';
/// Location claim: `L`, the normalised location URI; the value is the key
/// of the table or view that lives there.
pub const LOCATION: u8 = b'L';
/// Claims beneath a location: `U`, the location URI; its version moves
/// whenever a location is claimed below it, so a claim of an enclosing
/// location that scanned for claims below can assert nothing came since.
pub const BENEATH: u8 = b'U';
/// A purge in progress: `P`, the location URI. While the purge deletes
/// files, the location's claim is held by this key (its value), so nothing
/// new can claim the location; one left by a crash is released at start.
pub const PURGING: u8 = b'P';
/// One-time start-up migrations done: `S`, the migration's name.
pub const MIGRATION: u8 = b'S';
/// A non-default warehouse's keyspace: `W`, its name, 0x00, then its keys.
pub const WAREHOUSE: u8 = b'W';
/// Which warehouse owns the default (empty) keyspace: its name, 0x00, its
/// root (`store::keyspace::guard_default`).
pub const DEFAULT_WAREHOUSE: &[u8] = b"Cdefault-warehouse";

pub const PART_SEP: u8 = 0x1f;
pub const NAME_SEP: u8 = 0x00;

fn push_parts(out: &mut BumpVec<'_, u8>, parts: &[&str]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(PART_SEP);
        }
        out.extend_from_slice(p.as_bytes());
    }
}

/// Key of a namespace.
pub fn namespace<'a>(a: &'a Bump, parts: &[&str]) -> &'a [u8] {
    assert!(!parts.is_empty() && parts.len() < 255, "namespace depth out of range");
    let mut out = BumpVec::new_in(a);
    out.push(NAMESPACE);
    out.push(parts.len() as u8);
    push_parts(&mut out, parts);
    out.into_bump_slice()
}

/// Prefix of the direct children of `parent` (empty: top level).
pub fn namespace_children<'a>(a: &'a Bump, parent: &[&str]) -> &'a [u8] {
    assert!(parent.len() < 254, "namespace depth out of range");
    let mut out = BumpVec::new_in(a);
    out.push(NAMESPACE);
    out.push(parent.len() as u8 + 1);
    if !parent.is_empty() {
        push_parts(&mut out, parent);
        out.push(PART_SEP);
    }
    out.into_bump_slice()
}

/// Key of a table or view (`kind` is [`TABLE`] or [`VIEW`]); the catalog
/// builds these through `catalog::ObjectKind`.
pub fn object<'a>(a: &'a Bump, kind: u8, namespace: &[&str], name: &str) -> &'a [u8] {
    let mut out = BumpVec::new_in(a);
    out.push(kind);
    push_parts(&mut out, namespace);
    out.push(NAME_SEP);
    out.extend_from_slice(name.as_bytes());
    out.into_bump_slice()
}

/// Prefix of all tables or views of a namespace.
pub fn object_prefix<'a>(a: &'a Bump, kind: u8, namespace: &[&str]) -> &'a [u8] {
    object(a, kind, namespace, "")
}

/// Key of location `uri` of `kind` ([`LOCATION`], [`BENEATH`] or [`PURGING`]).
pub fn location<'a>(a: &'a Bump, kind: u8, uri: &str) -> &'a [u8] {
    join(a, &[kind], uri.as_bytes())
}

/// Prefix of the location claims strictly inside `uri`.
pub fn locations_inside<'a>(a: &'a Bump, uri: &str) -> &'a [u8] {
    let key = location(a, LOCATION, uri);
    join(a, key, b"/")
}

/// `prefix` followed by `name`: where a keyset scan resumes.
pub fn join<'a>(a: &'a Bump, prefix: &[u8], name: &[u8]) -> &'a [u8] {
    let out = a.alloc_slice_fill_copy(prefix.len() + name.len(), 0u8);
    out[..prefix.len()].copy_from_slice(prefix);
    out[prefix.len()..].copy_from_slice(name);
    out
}

/// The keyspace of the warehouse named `name`: empty for the default
/// warehouse, whose keys stay as they always were.
pub fn keyspace(name: &str, default: bool) -> Box<[u8]> {
    if default {
        return Box::default();
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    out.push(WAREHOUSE);
    out.extend_from_slice(name.as_bytes());
    out.push(NAME_SEP);
    out.into()
}

/// The length of `key`'s keyspace: 0 for a default-warehouse key.
fn keyspace_len(key: &[u8]) -> usize {
    match key.first() {
        Some(&WAREHOUSE) => key.iter().position(|&b| b == NAME_SEP).map_or(key.len(), |i| i + 1),
        _ => 0,
    }
}

/// The prefix a listing of `key`'s siblings scans: everything up to and
/// including its last separator (a top-level namespace: kind and depth).
/// Every scan prefix the catalog builds is one of the [`scanned_prefixes`]
/// of the keys under it, which is what lets the shard caches invalidate scans.
/// A key of another warehouse than the default is scanned within its
/// keyspace, so the prefix keeps the keyspace.
pub fn listing_prefix(key: &[u8]) -> &[u8] {
    let space = keyspace_len(key);
    let inner = &key[space..];
    if inner.first() == Some(&LOCATION) {
        return &key[..space + 1];
    }
    let end = match inner.first() {
        Some(&NAMESPACE) => inner.iter().rposition(|&b| b == PART_SEP).map_or(2, |i| i + 1),
        _ => inner.iter().rposition(|&b| b == NAME_SEP || b == PART_SEP).map_or(1, |i| i + 1),
    };
    &key[..space + end.min(inner.len())]
}

/// Every scan prefix a write of `key` changes: its listing prefix, and for
/// a location claim each enclosing location's `locations_inside` prefix.
pub fn scanned_prefixes(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let space = keyspace_len(key);
    let inside = if key.get(space) == Some(&LOCATION) { key } else { &[][..] };
    let enclosing = inside.iter().enumerate().skip(space).filter(|&(_, &b)| b == b'/').map(move |(i, _)| &inside[..=i]);
    std::iter::once(listing_prefix(key)).chain(enclosing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_prefix_matches_only_direct_children() {
        let a = Bump::new();
        let child = namespace(&a, &["a", "b"]);
        let grandchild = namespace(&a, &["a", "b", "c"]);
        let prefix = namespace_children(&a, &["a"]);
        assert!(child.starts_with(prefix));
        assert!(!grandchild.starts_with(prefix));
        assert_eq!(&child[prefix.len()..], b"b");
        let top = namespace(&a, &["a"]);
        let root = namespace_children(&a, &[]);
        assert!(top.starts_with(root) && !child.starts_with(root));
    }

    #[test]
    fn objects_of_a_namespace_do_not_include_nested_ones() {
        let a = Bump::new();
        let t = object(&a, TABLE, &["a"], "t");
        let nested = object(&a, TABLE, &["a", "b"], "t");
        let prefix = object_prefix(&a, TABLE, &["a"]);
        assert!(t.starts_with(prefix));
        assert!(!nested.starts_with(prefix));
        assert_eq!(join(&a, prefix, b"t"), t);
    }

    #[test]
    fn listing_prefix_is_the_scan_prefix_of_its_siblings() {
        let a = Bump::new();
        assert_eq!(listing_prefix(namespace(&a, &["x"])), namespace_children(&a, &[]));
        assert_eq!(listing_prefix(namespace(&a, &["x", "y", "z"])), namespace_children(&a, &["x", "y"]));
        assert_eq!(listing_prefix(object(&a, TABLE, &["x", "y"], "t")), object_prefix(&a, TABLE, &["x", "y"]));
        assert_eq!(listing_prefix(object(&a, VIEW, &["x"], "v")), object_prefix(&a, VIEW, &["x"]));
    }

    #[test]
    fn a_location_claim_changes_every_enclosing_scan() {
        let a = Bump::new();
        let claim = location(&a, LOCATION, "file:///w/a/b");
        let scanned: Vec<&[u8]> = scanned_prefixes(claim).collect();
        for outer in ["file:///w", "file:///w/a"] {
            let prefix = locations_inside(&a, outer);
            assert!(claim.starts_with(prefix) && scanned.contains(&prefix), "{outer}");
        }
        assert!(!claim.starts_with(locations_inside(&a, "file:///w/a/b")));
        let table = object(&a, TABLE, &["x/y"], "t");
        assert_eq!(scanned_prefixes(table).collect::<Vec<_>>(), [listing_prefix(table)]);
    }

    #[test]
    fn the_default_warehouse_keeps_its_keys_and_others_get_a_keyspace() {
        let a = Bump::new();
        assert!(keyspace("main", true).is_empty());
        let lake = keyspace("lake", false);
        assert_eq!(&*lake, b"Wlake\0");
        // Each listing of another warehouse is its default-layout listing in its keyspace.
        let within = |key: &[u8]| join(&a, &lake, key);
        for key in [
            namespace(&a, &["x"]),
            namespace(&a, &["x", "y", "z"]),
            object(&a, TABLE, &["x", "y"], "t"),
            object(&a, VIEW, &["x"], "v"),
            join(&a, &[IDEMPOTENCY], b"k"),
            location(&a, LOCATION, "s3://b/w/a/b"),
        ] {
            let scoped = within(key);
            let expected: Vec<&[u8]> = scanned_prefixes(key).map(&within).collect();
            assert_eq!(scanned_prefixes(scoped).collect::<Vec<_>>(), expected, "{key:?}");
        }
        assert_eq!(listing_prefix(within(namespace(&a, &["x"]))), within(namespace_children(&a, &[])));
        // A name that starts like another's is another keyspace.
        let lake2 = keyspace("lake2", false);
        assert!(!lake2.starts_with(&lake) && !lake.starts_with(&lake2));
    }
}
