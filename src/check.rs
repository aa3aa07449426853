//! `bingsan check [--repair]`: every table's and view's current metadata
//! file compared with its record in a stopped server's store, one line per
//! damaged file; with `--repair`, each is rewritten from its record. Every
//! warehouse of a warehouses file is checked, each in its own keyspace.

use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};

use crate::catalog::{Catalog, Codec, Settings, Tally};
use crate::config::CheckArgs;
use crate::fileio::{FileIo, WarehouseIo};
use crate::store::pg::is_postgres;
use crate::store::{guard_default, keys, Keyspace, PgStore, SledStore, Store};
use crate::warehouse::Warehouse;

/// Runs the check; `Err` (exit 1) while damaged files remain.
pub fn run(args: CheckArgs) -> Result<(), String> {
    let warehouses = Warehouse::from_args(args.warehouses_file.as_deref(), &args.warehouse)?;
    if is_postgres(&args.store) {
        // Nothing locks a database: the operator stops the nodes.
        return verify(PgStore::new(&args.store, 1)?, warehouses, args.repair);
    }
    // sled locks its directory: a running server makes this fail, as it should.
    let store = SledStore::open(&args.data_dir)
        .map_err(|e| format!("cannot open the store in {:?} (is the server running?): {e}", args.data_dir))?;
    verify(store, warehouses, args.repair)
}

/// Checks (and with `repair`, restores) every current metadata file of
/// each warehouse against its records in `store` (the default warehouse
/// first); also the last step of `bingsan restore`.
pub fn verify<S: Store + Send + Sync>(store: S, warehouses: Vec<Warehouse>, repair: bool) -> Result<(), String> {
    let store = Arc::new(store);
    let settings = Settings {
        prefix: String::new(),
        separator_encoded: String::new(),
        default_page_size: 1,
        max_page_size: 1,
        metadata_codec: Codec::None,
    };
    let mut catalogs = Vec::with_capacity(warehouses.len());
    for (i, w) in warehouses.iter().enumerate() {
        let files = WarehouseIo::open(w)?;
        let space = Keyspace::new(store.clone(), keys::keyspace(&w.name, i == 0));
        catalogs.push(Catalog::new(space, files, settings.clone()));
    }
    let default = warehouses.first().map(|w| w.name.clone()).unwrap_or_default();
    let tally: Tally = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bingsan-check")
        .spawn(move || async move {
            let all = async {
                guard_default(&*store, &default, catalogs[0].files.root(), false).await?;
                let mut sum = Tally::default();
                for catalog in &catalogs {
                    let t = catalog
                        .verify_all(
                            repair,
                            0,
                            || false,
                            |f| {
                                let done = if f.repaired { "repaired" } else { "damaged" };
                                println!("{done}: {}: {} {}", f.object, f.location, f.damage);
                            },
                        )
                        .await
                        .map_err(|e| format!("reading the store failed: {e}"))?;
                    sum.verified += t.verified;
                    sum.damaged += t.damaged;
                    sum.repaired += t.repaired;
                }
                Ok::<_, String>(sum)
            }
            .await;
            store.release_thread();
            all
        })
        .and_then(|h| h.join())
        .map_err(|e| format!("cannot run the check: {e}"))??;
    println!("checked {} metadata files: {} damaged, {} repaired", tally.verified, tally.damaged, tally.repaired);
    match tally.damaged - tally.repaired {
        0 => Ok(()),
        n if repair => Err(format!("{n} damaged metadata files could not be repaired")),
        n => Err(format!("{n} damaged metadata files (`bingsan check --repair` rewrites them from the store)")),
    }
}
