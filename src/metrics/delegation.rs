//! Process-wide counters of access delegation: STS calls by outcome and
//! failures to resolve the server's own credentials. Written from the
//! blocking pool and the shards, read by the metrics thread.

use std::sync::atomic::AtomicU64;

pub struct Delegation {
    pub sts_ok: AtomicU64,
    /// STS answered an error (`AccessDenied`, ...).
    pub sts_refused: AtomicU64,
    /// No answer in time, or no connection.
    pub sts_unreachable: AtomicU64,
    /// An answer that carried no credentials.
    pub sts_malformed: AtomicU64,
    /// The AWS chain gave no server credentials (delegation could not sign).
    pub server_credentials_failed: AtomicU64,
}

pub static DELEGATION: Delegation = Delegation {
    sts_ok: AtomicU64::new(0),
    sts_refused: AtomicU64::new(0),
    sts_unreachable: AtomicU64::new(0),
    sts_malformed: AtomicU64::new(0),
    server_credentials_failed: AtomicU64::new(0),
};
