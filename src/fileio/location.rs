//! Local locations as `file://` URIs: parsing a client's location,
//! normalising it (`.`, `..`, repeated slashes, symbolic links of the part
//! that exists), and the safe path segments of default locations.
//!
//! Paths inside a URI are taken literally (no percent-decoding), as
//! PyIceberg and iceberg-rust's local storage read them.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The scheme every local location carries.
pub const SCHEME: &str = "file://";

/// Why a location cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationError {
    /// Another scheme (`s3://`), or a `file://` URI with a host.
    Unsupported,
    /// Not an absolute path.
    Relative,
    /// Not an `s3://` URI, in an S3 warehouse.
    NotS3,
    /// Contains a control character.
    Invalid,
    /// Outside the warehouse once normalised.
    Outside,
    /// The warehouse root itself.
    Root,
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LocationError::Unsupported => "only file:// locations (or absolute paths) are supported",
            LocationError::Relative => "location is not absolute",
            LocationError::NotS3 => "only s3:// locations are supported in this warehouse",
            LocationError::Invalid => "location contains control characters",
            LocationError::Outside => "location is outside the warehouse",
            LocationError::Root => "location is the warehouse root",
        })
    }
}

/// The path of a local location: `file:///p`, `file:/p` or a bare `/p`
/// (the form stored before locations carried a scheme).
pub fn local_path(location: &str) -> Result<&str, LocationError> {
    if location.chars().any(char::is_control) {
        return Err(LocationError::Invalid);
    }
    let path = if let Some(rest) = location.strip_prefix(SCHEME) {
        // An empty authority only: `file://host/p` names another machine.
        rest
    } else if let Some(rest) = location.strip_prefix("file:") {
        rest
    } else if has_scheme(location) {
        return Err(LocationError::Unsupported);
    } else {
        location
    };
    if path.starts_with('/') {
        Ok(path)
    } else if location.starts_with("file:") {
        Err(LocationError::Unsupported)
    } else {
        Err(LocationError::Relative)
    }
}

/// `scheme:` per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
fn has_scheme(location: &str) -> bool {
    let Some((scheme, _)) = location.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `path` without `.`, `..` (resolved lexically) and repeated or trailing
/// slashes; `path` itself when it has none (as every location this catalog
/// writes).
pub fn lexical(path: &str) -> Cow<'_, Path> {
    let clean = path.starts_with('/') && path.split('/').skip(1).all(|c| !matches!(c, "" | "." | ".."));
    if clean {
        return Cow::Borrowed(Path::new(path));
    }
    // Sized once: the result is never longer than `path` with a root.
    let mut out = PathBuf::with_capacity(path.len() + 1);
    out.push("/");
    for c in Path::new(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Cow::Owned(out)
}

/// `path` (absolute, lexically clean) with its deepest existing ancestor's
/// symbolic links resolved: the place a write to `path` would really go.
pub fn resolve_links(path: Cow<'_, Path>) -> Cow<'_, Path> {
    // The common case, no link on the way, keeps `path` as it is: the
    // canonical form would be the same bytes in a new buffer.
    if !may_have_links(&path) {
        return path;
    }
    let mut existing = &*path;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let rest = path.strip_prefix(existing).expect("an ancestor of path");
            return Cow::Owned(if rest.as_os_str().is_empty() { real } else { real.join(rest) });
        }
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return path,
        }
    }
}

/// Whether an existing component of `path` (absolute, lexically clean) may
/// be a symbolic link: an `lstat` of each prefix from the root down (on
/// std's stack buffer, no allocation), ending at the first that does not
/// exist. An error other than a missing component says "may".
fn may_have_links(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    let ends = bytes.iter().enumerate().skip(1).filter(|&(_, &b)| b == b'/').map(|(i, _)| i);
    for end in ends.chain(std::iter::once(bytes.len())) {
        match std::fs::symlink_metadata(OsStr::from_bytes(&bytes[..end])) {
            Ok(meta) if meta.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// The `file://` URI of an absolute path.
pub fn uri(path: &Path) -> String {
    let path = path.to_string_lossy();
    let mut out = String::with_capacity(SCHEME.len() + path.len());
    out.push_str(SCHEME);
    out.push_str(&path);
    out
}

/// A location with its scheme: a bare absolute path (the old stored form)
/// becomes a `file://` URI; anything else is returned as is.
pub fn with_scheme(location: &str) -> Option<String> {
    location.starts_with('/').then(|| format!("{SCHEME}{location}"))
}

/// The longest readable part kept of a name in a default location.
const MAX_SEGMENT: usize = 64;

/// `<root>/<ns...>/<name>-<uuid>`, every part made a safe segment: the
/// default location of a new table or view in any warehouse. A staged
/// create may bring its own UUID: it is a name like any other.
pub fn default_location(root: &str, namespace: &[&str], name: &str, uuid: &str) -> String {
    let mut out = root.to_string();
    for part in namespace {
        out.push('/');
        out.push_str(&segment(part));
    }
    out.push('/');
    out.push_str(&segment(name));
    out.push('-');
    out.push_str(&segment(uuid));
    out
}

/// `name` as one safe path segment: ASCII letters, digits, `-`, `_` and
/// non-leading `.` are kept, anything else becomes `_`, so no name can
/// climb (`..`), hide (`.x`), nest (`a/b`) or need escaping in a URI. Two
/// names may share a segment: uniqueness comes from the UUID next to it.
pub fn segment(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_SEGMENT)
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            '.' if i > 0 => c,
            _ => '_',
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Proper ancestors of `location` (a normalised URI) strictly below `root`
/// (another normalised URI), deepest last.
pub fn ancestors<'l>(root: &str, location: &'l str) -> impl Iterator<Item = &'l str> {
    let below = location.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'));
    let start = if below { root.len() + 1 } else { location.len() };
    location.char_indices().skip_while(move |&(i, _)| i < start).filter(|&(_, c)| c == '/').map(|(i, _)| &location[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_a_local_location() {
        assert_eq!(local_path("file:///w/t"), Ok("/w/t"));
        assert_eq!(local_path("file:/w/t"), Ok("/w/t"));
        assert_eq!(local_path("/w/t"), Ok("/w/t"));
        assert_eq!(local_path("file://host/w"), Err(LocationError::Unsupported));
        assert_eq!(local_path("s3://b/t"), Err(LocationError::Unsupported));
        assert_eq!(local_path("hdfs:/x"), Err(LocationError::Unsupported));
        assert_eq!(local_path("relative/p"), Err(LocationError::Relative));
        assert_eq!(local_path("C:x"), Err(LocationError::Unsupported));
        assert_eq!(local_path("/w/\nx"), Err(LocationError::Invalid));
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(lexical("/w/a/../b/./c//"), Path::new("/w/b/c"));
        assert_eq!(lexical("/../../etc"), Path::new("/etc"));
        assert_eq!(lexical("/w/%2E%2E"), Path::new("/w/%2E%2E"));
        assert_eq!(lexical("/"), Path::new("/"));
        assert_eq!(lexical("/w/t/"), Path::new("/w/t"));
        assert_eq!(lexical("/w/.."), Path::new("/"));
        assert!(matches!(lexical("/w/a.b/..c"), Cow::Borrowed(p) if p == Path::new("/w/a.b/..c")));
    }

    #[test]
    fn links_of_the_existing_part_are_resolved() {
        let dir = std::env::temp_dir().join(format!("bingsan-loc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let real = std::fs::canonicalize(dir.join("real")).unwrap();
        let resolved = |p: PathBuf| resolve_links(Cow::Owned(p)).into_owned();
        assert_eq!(resolved(dir.join("link/new/t")), real.join("new/t"));
        assert_eq!(resolved(dir.join("link")), real);
        assert_eq!(resolved(real.join("new/t")), real.join("new/t"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_are_single_safe_and_bounded() {
        for (name, seg) in [("a/b", "a_b"), ("a%2Fb", "a_2Fb"), ("..", "_."), ("%2E%2E", "_2E_2E"), (".h", "_h")] {
            assert_eq!(segment(name), seg);
        }
        assert_eq!(segment("t.v1-x_y"), "t.v1-x_y");
        assert_eq!(segment("données"), "donn_es");
        assert_eq!(segment(&"x".repeat(300)).len(), MAX_SEGMENT);
    }

    #[test]
    fn ancestors_below_the_root() {
        let got: Vec<&str> = ancestors("file:///w", "file:///w/a/b/c").collect();
        assert_eq!(got, ["file:///w/a", "file:///w/a/b"]);
        assert_eq!(ancestors("file:///w", "file:///w/a").count(), 0);
        assert_eq!(ancestors("file:///w", "file:///wx/a").count(), 0);
        assert_eq!(with_scheme("/w/t").as_deref(), Some("file:///w/t"));
        assert_eq!(with_scheme("file:///w/t"), None);
    }
}
