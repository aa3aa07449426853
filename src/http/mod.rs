//! HTTP/1.1 for the shards: request framing, the connection loop, responses.
//!
//! Protocol only: nothing here knows about Iceberg. The connection loop hands
//! each complete request to a [`Service`] and writes what it answers.

pub mod accept;
mod conn;
mod framing;
pub mod percent;
mod request;
mod response;
mod transport;

pub use conn::{serve_connection, ConnLimits, ConnState, Serving};
pub use request::{Method, Request};
pub use response::{reason, Response};
pub use transport::Transport;

/// What answers requests (the catalog's router, a test double...).
#[allow(async_fn_in_trait)] // Connections stay on their shard: no Send bound.
pub trait Service {
    /// Fills `resp` for `req`. Errors are responses too: there is no failure path.
    async fn call(&self, req: &Request<'_>, resp: &mut Response);
}
