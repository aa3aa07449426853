//! The start-up verification pass: every current metadata file checked
//! against its record and restored from it, on a thread of its own at a
//! bounded rate, so no shard waits for it and the disk is not flooded.

use std::sync::Arc;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::Shared;
use crate::fileio::WarehouseIo;
use crate::store::SledStore;

/// Starts the pass at `per_sec` files a second; it ends when done or when
/// shutdown is requested.
pub fn start(shared: Arc<Shared<SledStore, WarehouseIo>>, per_sec: u32) -> Result<ExecutorJoinHandle<()>, String> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("bingsan-verify")
        .io_memory(super::IO_MEMORY)
        .spawn(move || async move {
            let stop = || shared.shutdown.requested();
            match shared.catalog.verify_all(true, per_sec, stop, |_| {}).await {
                Ok(t) => tracing::info!(
                    verified = t.verified,
                    damaged = t.damaged,
                    repaired = t.repaired,
                    "metadata files checked against the store"
                ),
                Err(e) => tracing::error!(error = %e, "metadata verification stopped"),
            }
        })
        .map_err(|e| format!("cannot start the metadata verifier: {e}"))
}
