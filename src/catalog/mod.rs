//! Catalog semantics: what each REST operation does to the store.
//!
//! Handlers write their JSON answer straight into the response buffer and
//! return an [`ApiError`] on failure; HTTP concerns stay in `server`.

mod chunked;
mod commit;
mod compressed;
mod ident;
mod kind;
mod locations;
mod namespaces;
mod paging;
mod record;
mod retry;
mod seal;
mod sliced;
mod tables;
#[cfg(test)]
mod test_support;
mod verify;
mod views;
mod written;

pub use commit::now_ms;
pub use compressed::Codec;
pub use ident::validate_namespace;
pub use kind::ObjectKind;
pub(crate) use namespaces::write_failure;
pub use paging::Page;
pub use seal::{encode_answer, Seal};
pub use tables::{Encoding, Loaded};
pub use verify::{Damage, Finding, Tally};

use crate::fileio::FileIo;
use crate::store::Store;

/// Server-wide catalog settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Catalog prefix advertised in `/v1/config` (empty: none).
    pub prefix: String,
    /// Namespace separator advertised in `/v1/config`, percent-encoded.
    pub separator_encoded: String,
    /// Page size when a client asks for paging without `pageSize`.
    pub default_page_size: usize,
    /// Largest page a client may ask for.
    pub max_page_size: usize,
    /// Codec of metadata files of objects without `write.metadata.compression-codec`.
    pub metadata_codec: compressed::Codec,
}

/// The catalog: records in a store, metadata files in a warehouse.
pub struct Catalog<S: Store, F: FileIo> {
    pub store: S,
    pub files: F,
    pub settings: Settings,
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    pub fn new(store: S, files: F, settings: Settings) -> Catalog<S, F> {
        Catalog { store, files, settings }
    }
}

/// Maps a store failure during a read to a 503 when the database is down or
/// slow (worth a retry), else a 500 (never a client error); the store's own
/// words (paths, OS errors) go to the log only.
pub fn store_failure(e: crate::store::StoreError) -> crate::error::ApiError {
    tracing::error!(error = %e, "store failure");
    match e.cause() {
        // A database that is down or slow: the client may retry.
        Some(crate::disk::Cause::Unavailable) => crate::error::ApiError::new(
            crate::error::ErrorKind::ServiceUnavailable,
            crate::disk::Cause::Unavailable.message(),
        ),
        Some(crate::disk::Cause::Timeout) => {
            crate::error::ApiError::new(crate::error::ErrorKind::ServiceUnavailable, "storage timed out; retry later")
        }
        _ => crate::error::ApiError::internal("storage failure; see the server log"),
    }
}
