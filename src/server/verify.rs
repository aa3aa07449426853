//! The start-up verification pass: every current metadata file checked
//! against its record and restored from it, on a thread of its own at a
//! bounded rate, so no shard waits for it and the disk is not flooded.

use std::sync::Arc;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::Shared;
use crate::fileio::WarehouseIo;
use crate::store::Store;

/// Starts the pass at `per_sec` files a second; it ends when done or when
/// shutdown is requested.
pub fn start<S: Store + Send + Sync>(
    shared: Arc<Shared<S, WarehouseIo>>,
    per_sec: u32,
) -> Result<ExecutorJoinHandle<()>, String> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("bingsan-verify")
        .io_memory(super::IO_MEMORY)
        .spawn(move || async move {
            let stop = || shared.shutdown.requested();
            // One warehouse after the other, each at the same pace.
            for served in &shared.warehouses {
                let warehouse = served.warehouse.name.as_str();
                match served.catalog.verify_all(true, per_sec, stop, |_| {}).await {
                    Ok(t) => tracing::info!(
                        warehouse,
                        verified = t.verified,
                        damaged = t.damaged,
                        repaired = t.repaired,
                        "metadata files checked against the store"
                    ),
                    Err(e) => tracing::error!(warehouse, error = %e, "metadata verification stopped"),
                }
            }
            shared.store.release_thread();
        })
        .map_err(|e| format!("cannot start the metadata verifier: {e}"))
}
