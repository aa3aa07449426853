//! The warehouses one process serves: each a catalog of its own (its
//! keyspace of the shared store, its file I/O), its prefix and its
//! `/v1/config` answer. The default warehouse comes first; a request's
//! prefix picks one by position (`routes::Matched::warehouse`).

use std::sync::Arc;

use crate::catalog::{Catalog, Settings};
use crate::fileio::{FileIo, WarehouseIo};
use crate::store::{keys, Keyspace, Store};
use crate::warehouse::Warehouse;

/// One warehouse as the shards serve it.
pub struct Served<S: Store, F: FileIo> {
    pub catalog: Catalog<Keyspace<S>, F>,
    pub warehouse: Warehouse,
    /// The `/v1/config` response body, built once at start-up.
    pub config_body: Vec<u8>,
}

/// Opens every warehouse over `store`. The default one is served under
/// `default_prefix` (and without a prefix), the others under their names;
/// two roots one inside the other are refused, since each warehouse's
/// location index sees only its own tables.
pub fn open<S: Store>(
    store: &Arc<S>,
    warehouses: Vec<Warehouse>,
    default_prefix: &str,
    settings: &Settings,
) -> Result<Vec<Served<S, WarehouseIo>>, String> {
    let mut served: Vec<Served<S, WarehouseIo>> = Vec::with_capacity(warehouses.len());
    for (i, warehouse) in warehouses.into_iter().enumerate() {
        let prefix = if i == 0 { default_prefix.to_string() } else { warehouse.name.clone() };
        if served.iter().any(|s| !prefix.is_empty() && s.catalog.settings.prefix == prefix) {
            return Err(format!("prefix {prefix:?} names two warehouses"));
        }
        let files = WarehouseIo::open(&warehouse)?;
        if let Some(other) = served.iter().find(|s| nested(s.catalog.files.root(), files.root())) {
            return Err(format!(
                "warehouses {:?} and {:?}: one root lies inside the other",
                other.warehouse.name, warehouse.name
            ));
        }
        let settings = Settings { prefix, ..settings.clone() };
        let config_body = super::config_body(&settings, &warehouse);
        let space = Keyspace::new(store.clone(), keys::keyspace(&warehouse.name, i == 0));
        served.push(Served { catalog: Catalog::new(space, files, settings), warehouse, config_body });
    }
    Ok(served)
}

/// Whether one normalised root is the other or lies inside it.
fn nested(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        let outer = outer.trim_end_matches('/');
        inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// Which warehouse a `/v1/config` query asks for, by position: the default
/// without `warehouse=`; `None` for a name not served (or two different
/// ones). Names need no percent-encoding, and the search allocates nothing.
pub fn asked<'n>(query: &str, names: impl Iterator<Item = &'n str> + Clone) -> Option<usize> {
    let mut asked = None;
    for wanted in query.split('&').filter_map(|p| p.strip_prefix("warehouse=")) {
        let i = names.clone().position(|n| n == wanted)?;
        if asked.is_some_and(|a| a != i) {
            return None;
        }
        asked = Some(i);
    }
    Some(asked.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_answers_the_warehouse_asked_for_or_the_default() {
        let names = ["main", "lake"];
        for (query, want) in [
            ("", Some(0)),
            ("warehouse=main", Some(0)),
            ("warehouse=lake", Some(1)),
            ("x=1&warehouse=lake", Some(1)),
            ("warehouse=lake&warehouse=lake", Some(1)),
            ("warehouse=other", None),
            ("warehouse=", None),
            ("warehouse=lake&warehouse=main", None),
            ("warehouse=lake2", None),
        ] {
            assert_eq!(asked(query, names.iter().copied()), want, "{query}");
        }
    }

    #[test]
    fn roots_one_inside_the_other_are_nested() {
        assert!(nested("file:///w", "file:///w/a"));
        assert!(nested("s3://b/w/a", "s3://b/w"));
        assert!(nested("s3://b/w", "s3://b/w/"));
        assert!(!nested("file:///w", "file:///w2"));
        assert!(!nested("s3://b/w", "s3://c/w"));
        assert!(!nested("file:///w", "s3://w"));
    }
}
