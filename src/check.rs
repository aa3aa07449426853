//! `bingsan check [--repair]`: every table's and view's current metadata
//! file compared with its record in a stopped server's store, one line per
//! damaged file; with `--repair`, each is rewritten from its record.

use glommio::{LocalExecutorBuilder, Placement};

use crate::catalog::{Catalog, Codec, Settings, Tally};
use crate::config::CheckArgs;
use crate::fileio::LocalFileIo;
use crate::store::pg::is_postgres;
use crate::store::{PgStore, SledStore, Store};

/// Runs the check; `Err` (exit 1) while damaged files remain.
pub fn run(args: CheckArgs) -> Result<(), String> {
    if is_postgres(&args.store) {
        // Nothing locks a database: the operator stops the nodes.
        return verify(PgStore::new(&args.store, 1)?, &args.warehouse, args.repair);
    }
    // sled locks its directory: a running server makes this fail, as it should.
    let store = SledStore::open(&args.data_dir)
        .map_err(|e| format!("cannot open the store in {:?} (is the server running?): {e}", args.data_dir))?;
    verify(store, &args.warehouse, args.repair)
}

/// Checks (and with `repair`, restores) every current metadata file in
/// `warehouse` against `store`; also the last step of `bingsan restore`.
pub fn verify<S: Store + Send + Sync>(store: S, warehouse: &str, repair: bool) -> Result<(), String> {
    let files = LocalFileIo::new(warehouse).map_err(|e| format!("cannot open warehouse {warehouse}: {e}"))?;
    let settings = Settings {
        prefix: String::new(),
        separator_encoded: String::new(),
        default_page_size: 1,
        max_page_size: 1,
        metadata_codec: Codec::None,
    };
    let catalog = Catalog::new(store, files, settings);
    let tally: Tally = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bingsan-check")
        .spawn(move || async move {
            let tally = catalog
                .verify_all(
                    repair,
                    0,
                    || false,
                    |f| {
                        let done = if f.repaired { "repaired" } else { "damaged" };
                        println!("{done}: {}: {} {}", f.object, f.location, f.damage);
                    },
                )
                .await;
            catalog.store.release_thread();
            tally
        })
        .and_then(|h| h.join())
        .map_err(|e| format!("cannot run the check: {e}"))?
        .map_err(|e| format!("reading the store failed: {e}"))?;
    println!("checked {} metadata files: {} damaged, {} repaired", tally.verified, tally.damaged, tally.repaired);
    match tally.damaged - tally.repaired {
        0 => Ok(()),
        n if repair => Err(format!("{n} damaged metadata files could not be repaired")),
        n => Err(format!("{n} damaged metadata files (`bingsan check --repair` rewrites them from the store)")),
    }
}
