//! Store operation latencies, recorded into the running shard's metrics.

use std::time::Instant;

use crate::metrics::{observe_store, StoreOp};

/// Times one store operation into the shard's metrics when dropped.
pub struct Timer(StoreOp, Instant);

impl Timer {
    pub fn start(op: StoreOp) -> Timer {
        Timer(op, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        observe_store(self.0, self.1.elapsed().as_micros() as u64);
    }
}
