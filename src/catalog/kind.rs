//! Tables and views: the two kinds of object a name in a namespace can be.
//!
//! They share the catalog's machinery (records, locations, seals) and one
//! name space, and differ in their store key byte, their words in messages
//! and the 404 they answer.

use bumpalo::Bump;

use crate::error::{ApiError, ErrorKind};
use crate::store::keys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    View,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 2] = [ObjectKind::Table, ObjectKind::View];

    /// The first byte of its store keys (on disk: never change it).
    pub const fn key_byte(self) -> u8 {
        match self {
            ObjectKind::Table => keys::TABLE,
            ObjectKind::View => keys::VIEW,
        }
    }

    /// The kind of a table or view key; `None` for any other key.
    pub fn of_key(key: &[u8]) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| key.first() == Some(&k.key_byte()))
    }

    /// Key of the object `name` in namespace `ns`.
    pub fn key<'a>(self, a: &'a Bump, ns: &[&str], name: &str) -> &'a [u8] {
        keys::object(a, self.key_byte(), ns, name)
    }

    /// Prefix of all objects of this kind in namespace `ns`.
    pub fn prefix<'a>(self, a: &'a Bump, ns: &[&str]) -> &'a [u8] {
        keys::object_prefix(a, self.key_byte(), ns)
    }

    /// "Table" or "View", for messages.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Table => "Table",
            ObjectKind::View => "View",
        }
    }

    /// "table" or "view", within a sentence.
    pub const fn noun(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
        }
    }

    /// What a name of this kind is called when it breaks a naming rule.
    pub const fn name_label(self) -> &'static str {
        match self {
            ObjectKind::Table => "table name",
            ObjectKind::View => "view name",
        }
    }

    /// Tables and views share names: the kind a name may not also be.
    pub const fn other(self) -> ObjectKind {
        match self {
            ObjectKind::Table => ObjectKind::View,
            ObjectKind::View => ObjectKind::Table,
        }
    }

    /// The 404 for a missing object of this kind.
    pub fn not_found(self, ns: &[&str], name: &str) -> ApiError {
        let error = match self {
            ObjectKind::Table => ErrorKind::NoSuchTable,
            ObjectKind::View => ErrorKind::NoSuchView,
        };
        ApiError::new(error, format!("{} does not exist: {}.{name}", self.name(), ns.join(".")))
    }

    /// The 409 for a name already taken by an object of this kind.
    pub fn already_exists(self, ns: &[&str], name: &str) -> ApiError {
        ApiError::new(ErrorKind::AlreadyExists, format!("{} already exists: {}.{name}", self.name(), ns.join(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_tells_its_kind() {
        let a = Bump::new();
        for kind in ObjectKind::ALL {
            assert_eq!(ObjectKind::of_key(kind.key(&a, &["ns"], "t")), Some(kind));
            assert_ne!(kind.other(), kind);
        }
        assert_eq!(ObjectKind::of_key(keys::namespace(&a, &["ns"])), None);
        assert_eq!(ObjectKind::of_key(b""), None);
    }

    #[test]
    fn key_bytes_stay_those_on_disk() {
        assert_eq!((ObjectKind::Table.key_byte(), ObjectKind::View.key_byte()), (b'T', b'V'));
    }
}
