//! Opening the store on a disk that may be full or read-only.

use std::path::Path;

use super::{Cause, Reserve};
use crate::store::{SledStore, StoreError};

/// Opens the store in `dir`. When the disk is too full for the store to
/// open, the reserve is given back and the open tried once more; the
/// watcher then refuses writes until the disk has room for the reserve
/// again. A failure says why and what the operator can do.
pub fn open_store(dir: &Path, reserve: &Reserve) -> Result<SledStore, String> {
    let first = match SledStore::open(dir) {
        Ok(store) => return Ok(store),
        Err(e) => e,
    };
    if first.cause() == Some(Cause::NoSpace) {
        match reserve.release() {
            Ok(true) => {
                tracing::warn!(
                    reserve_bytes = reserve.size(),
                    "the data directory's disk is full: gave up the storage reserve to open the store; \
                     reads are served, writes are refused until space is freed"
                );
                return SledStore::open(dir).map_err(|e| explain(dir, &e));
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot remove the storage reserve"),
        }
    }
    Err(explain(dir, &first))
}

fn explain(dir: &Path, e: &StoreError) -> String {
    match e.cause() {
        Some(Cause::NoSpace) => format!(
            "cannot open the store in {dir:?}: its disk is full and the store needs room to open (it writes a \
             snapshot). Free some space there (a few MB) or grow the volume, then start again; nothing stored is \
             lost ({e})"
        ),
        Some(Cause::ReadOnly) => format!(
            "cannot open the store in {dir:?}: its filesystem is read-only and the store cannot open read-only. \
             Remount it read-write, then start again ({e})"
        ),
        _ => format!("cannot open the store in {dir:?}: {e}"),
    }
}
