//! Bingsan: an Apache Iceberg REST catalog server, thread-per-core on io_uring.
//!
//! See `docs/architecture.md` for the map of modules and how a request flows.

pub mod admin;
pub mod alloc;
pub mod auth;
pub mod background;
pub mod backup;
pub mod bench;
pub mod bulk;
pub mod catalog;
pub mod check;
pub mod config;
pub mod delegation;
pub mod disk;
pub mod error;
pub mod fileio;
pub mod http;
pub mod json;
pub mod metadata;
pub mod metrics;
pub mod pool;
pub mod routes;
pub mod server;
pub mod store;
pub mod uring;
pub mod warehouse;
