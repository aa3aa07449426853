//! Bingsan: an Apache Iceberg REST catalog server, thread-per-core on io_uring.
//!
//! See `docs/architecture.md` for the map of modules and how a request flows.

pub mod bench;
pub mod metadata;
pub mod error;
pub mod json;
pub mod pool;
pub mod store;
pub mod http;
pub mod routes;
pub mod catalog;
pub mod alloc;
pub mod config;
pub mod metrics;
pub mod server;
pub mod fileio;
