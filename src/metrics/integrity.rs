//! Process-wide counters of the metadata file checks: written by whichever
//! thread checks (the verifier, a shard's commit), read by the metrics thread.

use std::sync::atomic::AtomicU64;

/// Current metadata files checked, found damaged, and restored.
pub struct MetadataFiles {
    pub verified: AtomicU64,
    pub damaged: AtomicU64,
    pub repaired: AtomicU64,
}

pub static METADATA_FILES: MetadataFiles =
    MetadataFiles { verified: AtomicU64::new(0), damaged: AtomicU64::new(0), repaired: AtomicU64::new(0) };
