//! A catalog on a fresh store and warehouse, for unit tests.

use std::path::PathBuf;
use std::rc::Rc;

use bumpalo::Bump;

use super::{Catalog, Seal, Settings};
use crate::fileio::LocalFileIo;
use crate::store::SledStore;

/// A table schema for create bodies.
pub const SCHEMA: &str =
    r#"{"type":"struct","schema-id":0,"fields":[{"id":1,"name":"id","type":"long","required":true}]}"#;

pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

/// Runs `test` on a glommio executor (file I/O needs one) against a fresh
/// store and warehouse (its path is the second argument) with namespace `db`.
pub fn with_catalog(test: impl AsyncFnOnce(Rc<Catalog<SledStore, LocalFileIo>>, PathBuf) + Send + 'static) {
    let dir = std::env::temp_dir().join(format!("bingsan-catalog-{}", uuid::Uuid::new_v4()));
    let wh = dir.join("wh");
    let store = SledStore::open(&dir.join("data")).unwrap();
    let files = LocalFileIo::new(wh.to_str().unwrap()).unwrap();
    let settings = Settings {
        prefix: String::new(),
        separator_encoded: "%1F".into(),
        default_page_size: 100,
        max_page_size: 1000,
        metadata_codec: super::Codec::None,
    };
    let catalog = Catalog::new(store, files, settings);
    let root = std::fs::canonicalize(&wh).unwrap();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let catalog = Rc::new(catalog);
            catalog
                .create_namespace(
                    &Bump::new(),
                    br#"{"namespace":["db"]}"#,
                    &mut crate::pool::PooledBuf::unpooled(0),
                    &Seal::none(),
                )
                .await
                .unwrap();
            test(catalog, root).await;
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
