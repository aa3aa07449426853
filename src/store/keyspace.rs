//! One warehouse's view of the shared store: every key behind the
//! warehouse's keyspace (`keys::keyspace`), so each warehouse is a catalog
//! of its own and the catalog code never sees another's keys.
//!
//! The default warehouse's keyspace is empty: its calls go straight through,
//! and its keys are the ones stored before there were several warehouses.
//! Another warehouse's read builds its key in a buffer from a thread-local
//! free list, so a hot read allocates nothing once the list is warm.

use std::cell::RefCell;
use std::sync::Arc;

use super::{keys, Expect, SledStore, Store, StoreError, Versioned, Write};

/// The store as one warehouse sees it.
pub struct Keyspace<S> {
    inner: Arc<S>,
    space: Box<[u8]>,
}

impl<S: Store> Keyspace<S> {
    pub fn new(inner: Arc<S>, space: Box<[u8]>) -> Keyspace<S> {
        Keyspace { inner, space }
    }
}

/// Buffers kept per thread, and the largest one kept.
const KEEP: usize = 64;
const KEEP_BYTES: usize = 4096;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A key in its keyspace; its buffer goes back to the free list on drop.
struct Scoped(Vec<u8>);

impl Scoped {
    fn new(space: &[u8], key: &[u8]) -> Scoped {
        let mut buf = FREE.with(|f| f.borrow_mut().pop()).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(space);
        buf.extend_from_slice(key);
        Scoped(buf)
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() <= KEEP_BYTES {
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < KEEP {
                    f.push(buf);
                }
            });
        }
    }
}

impl<S: Store> Store for Keyspace<S> {
    type Value = S::Value;

    async fn get(&self, key: &[u8]) -> Result<Option<Versioned<S::Value>>, StoreError> {
        if self.space.is_empty() {
            return self.inner.get(key).await;
        }
        let key = Scoped::new(&self.space, key);
        self.inner.get(&key.0).await
    }

    async fn scan<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8], Versioned<&[u8]>) -> bool,
    {
        if self.space.is_empty() {
            return self.inner.scan(prefix, after, visit).await;
        }
        let prefix = Scoped::new(&self.space, prefix);
        let after = after.map(|k| Scoped::new(&self.space, k));
        let n = self.space.len();
        self.inner.scan(&prefix.0, after.as_ref().map(|k| k.0.as_slice()), |k, v| visit(&k[n..], v)).await
    }

    async fn scan_keys<F>(&self, prefix: &[u8], after: Option<&[u8]>, mut visit: F) -> Result<(), StoreError>
    where
        F: FnMut(&[u8]) -> bool,
    {
        if self.space.is_empty() {
            return self.inner.scan_keys(prefix, after, visit).await;
        }
        let prefix = Scoped::new(&self.space, prefix);
        let after = after.map(|k| Scoped::new(&self.space, k));
        let n = self.space.len();
        self.inner.scan_keys(&prefix.0, after.as_ref().map(|k| k.0.as_slice()), |k| visit(&k[n..])).await
    }

    async fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        if self.space.is_empty() {
            return self.inner.apply(writes).await;
        }
        let keys: Vec<Scoped> = writes.iter().map(|w| Scoped::new(&self.space, w.key)).collect();
        let scoped: Vec<Write<'_>> =
            writes.iter().zip(&keys).map(|(w, k)| Write { key: &k.0, expect: w.expect, op: w.op }).collect();
        self.inner.apply(&scoped).await
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    fn writable(&self) -> bool {
        self.inner.writable()
    }

    fn release_thread(&self) {
        self.inner.release_thread()
    }

    fn embedded(&self) -> Option<&SledStore> {
        self.inner.embedded()
    }
}

/// Makes sure the default warehouse (named `name`, at `root`) is the one
/// whose records the store's default keyspace holds: making another
/// warehouse the default would serve the old one's tables as its own, under
/// the wrong root. The first start records the pair; a rename (same root) or
/// a move (same name) updates it; a warehouse that matches neither is
/// refused. `record` false only checks (`bingsan check`, a stopped server).
pub async fn guard_default<S: Store>(store: &S, name: &str, root: &str, record: bool) -> Result<(), String> {
    let failed = |e: StoreError| format!("cannot read or record the default warehouse: {e}");
    let pair = [name.as_bytes(), &[0], root.as_bytes()].concat();
    // Nodes starting together race to record it; a lost race reads the winner's.
    for _ in 0..3 {
        let expect = match store.get(keys::DEFAULT_WAREHOUSE).await.map_err(failed)? {
            None => Expect::Absent,
            Some(v) if v.value.as_ref() == pair.as_slice() => return Ok(()),
            Some(v) => {
                let stored = String::from_utf8_lossy(v.value.as_ref());
                let (was, at) = stored.split_once('\0').unwrap_or((&stored, ""));
                if was != name && at != root {
                    return Err(format!(
                        "this store's default warehouse is {was:?} at {at}, but this configuration makes {name:?} \
                         at {root} the default: it would serve {was:?}'s tables as its own. List {was:?} first \
                         (or mark it `default = true`) in the warehouses file, or start with --warehouse {at}"
                    ));
                }
                Expect::Version(v.version)
            }
        };
        if !record {
            return Ok(());
        }
        match store.apply(&[Write::put(keys::DEFAULT_WAREHOUSE, expect, &pair)]).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err("the default warehouse changed while starting; start again".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys;
    use crate::store::Expect;
    use futures_lite::future::block_on;

    #[test]
    fn two_keyspaces_over_one_store_are_independent() {
        let dir = std::env::temp_dir().join(format!("bingsan-keyspace-{}", uuid::Uuid::new_v4()));
        let store = Arc::new(SledStore::open(&dir).unwrap());
        let main = Keyspace::new(store.clone(), keys::keyspace("main", true));
        let lake = Keyspace::new(store.clone(), keys::keyspace("lake", false));
        block_on(async {
            main.apply(&[Write::put(b"Ta\0t", Expect::Absent, b"main")]).await.unwrap();
            lake.apply(&[Write::put(b"Ta\0t", Expect::Absent, b"lake")]).await.unwrap();
            lake.apply(&[Write::put(b"Ta\0u", Expect::Absent, b"lake-u")]).await.unwrap();
            // The default keyspace's key is stored exactly as before; the other's behind `Wlake\0`.
            assert_eq!(store.get(b"Ta\0t").await.unwrap().unwrap().value.as_ref(), b"main");
            assert_eq!(store.get(b"Wlake\0Ta\0t").await.unwrap().unwrap().value.as_ref(), b"lake");
            assert_eq!(lake.get(b"Ta\0t").await.unwrap().unwrap().value.as_ref(), b"lake");
            let list = |ks: &Keyspace<SledStore>, after: Option<&'static [u8]>| {
                let mut seen = Vec::new();
                let fut = ks.scan(b"Ta\0", after, |k, _| {
                    seen.push(k.to_vec());
                    true
                });
                block_on(fut).unwrap();
                seen
            };
            assert_eq!(list(&main, None), [b"Ta\0t".to_vec()]);
            assert_eq!(list(&lake, None), [b"Ta\0t".to_vec(), b"Ta\0u".to_vec()]);
            assert_eq!(list(&lake, Some(b"Ta\0t")), [b"Ta\0u".to_vec()]);
            // A write in one keyspace is seen there at once (the cached scan is invalidated).
            lake.apply(&[Write::delete(b"Ta\0t", Expect::Present)]).await.unwrap();
            assert_eq!(list(&lake, None), [b"Ta\0u".to_vec()]);
            assert_eq!(list(&main, None), [b"Ta\0t".to_vec()]);
            // A conflict names the write of the caller's batch.
            let e = lake
                .apply(&[Write::check(b"Ta\0u", Expect::Present), Write::put(b"Ta\0u", Expect::Absent, b"x")])
                .await
                .unwrap_err();
            assert_eq!(e, StoreError::Conflict { index: 1 });
        });
        drop((main, lake, store));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_default_warehouse_may_be_renamed_or_moved_but_not_replaced() {
        let dir = std::env::temp_dir().join(format!("bingsan-default-{}", uuid::Uuid::new_v4()));
        let store = SledStore::open(&dir).unwrap();
        block_on(async {
            // A check before any start records nothing and refuses nothing.
            guard_default(&store, "main", "file:///a", false).await.unwrap();
            assert!(store.get(keys::DEFAULT_WAREHOUSE).await.unwrap().is_none());
            guard_default(&store, "main", "file:///a", true).await.unwrap();
            guard_default(&store, "lake", "file:///a", true).await.unwrap();
            guard_default(&store, "lake", "file:///b", true).await.unwrap();
            let err = guard_default(&store, "other", "file:///c", false).await.unwrap_err();
            assert!(err.contains(r#"default warehouse is "lake" at file:///b"#), "{err}");
            assert!(guard_default(&store, "other", "file:///c", true).await.is_err());
            let pair = store.get(keys::DEFAULT_WAREHOUSE).await.unwrap().unwrap();
            assert_eq!(pair.value.as_ref(), b"lake\0file:///b");
        });
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
