//! Catalog semantics: what each REST operation does to the store.
//!
//! Handlers write their JSON answer straight into the response buffer and
//! return an [`ApiError`] on failure; HTTP concerns stay in `server`.

mod ident;
mod namespaces;
mod paging;

pub use ident::validate_namespace;
pub use paging::Page;

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
}

/// The catalog over a store.
pub struct Catalog<S: Store> {
    pub store: S,
    pub settings: Settings,
}

impl<S: Store> Catalog<S> {
    pub fn new(store: S, settings: Settings) -> Catalog<S> {
        Catalog { store, settings }
    }
}

/// Maps a store failure during a read to a 500 (never a client error).
pub(crate) fn store_failure(e: crate::store::StoreError) -> crate::error::ApiError {
    tracing::error!(error = %e, "store failure");
    crate::error::ApiError::new(crate::error::ErrorKind::Internal, format!("storage failure: {e}"))
}
