//! Metrics: per-shard single-writer counters, and the metrics thread that
//! aggregates them (with the `prometheus` crate's registry) into the text
//! exposition served at `/metrics`.

mod collector;
mod delegation;
mod integrity;
mod shard;
mod thread;

pub use delegation::DELEGATION;
pub use integrity::{MetadataFiles, METADATA_FILES};
pub use shard::{count_write_failure, observe_store, CommitOutcome, ShardStats, StoreOp, LATENCY_BUCKETS_US, STATUSES};
pub use thread::{MetricsHandle, MetricsThread};
