//! The shard's request handler: route, dispatch to the catalog, count.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bumpalo::Bump;

use super::state::Shared;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::http::percent::query_pairs;
use crate::http::{Request, Response, Service};
use crate::metrics::ShardStats;
use crate::pool::ArenaPool;
use crate::routes::{parse_namespace, route, Matched, Operation, RouteConfig, RouteError};
use crate::store::Store;

/// One per shard; shared by that shard's connections through an `Rc`.
pub struct ShardService<S: Store> {
    pub shared: Arc<Shared<S>>,
    pub routes: Rc<RouteConfig>,
    pub arenas: Rc<ArenaPool>,
    pub stats: Arc<ShardStats>,
}

impl<S: Store> Service for ShardService<S> {
    async fn call(&self, req: &Request<'_>, resp: &mut Response) {
        let started = Instant::now();
        // One arena per request: requests interleave at awaits, so they
        // must never share scratch memory.
        let arena = self.arenas.get();
        let op = match route(req.method, req.path, &self.routes, &arena) {
            Ok(m) => {
                if let Err(e) = self.dispatch(&m, req, &arena, resp).await {
                    resp.error(&e);
                }
                m.op
            }
            Err(e) => {
                if let RouteError::MethodNotAllowed(allow) = e {
                    resp.header("Allow", allow.as_bytes());
                }
                resp.error(&e.to_api(req.path));
                Operation::Unmatched
            }
        };
        self.stats.record(op, resp.status, started.elapsed().as_micros() as u64);
    }
}

impl<S: Store> ShardService<S> {
    async fn dispatch(&self, m: &Matched<'_>, req: &Request<'_>, a: &Bump, resp: &mut Response) -> ApiResult<()> {
        let catalog = &self.shared.catalog;
        let out = &mut *resp.body;
        match m.op {
            Operation::GetConfig => out.extend_from_slice(&self.shared.config_body),
            Operation::HealthLive => out.extend_from_slice(b"{\"status\":\"ok\"}"),
            Operation::HealthReady => {
                if self.shared.ready() {
                    out.extend_from_slice(b"{\"status\":\"ready\"}");
                } else {
                    return Err(ApiError::new(ErrorKind::ServiceUnavailable, "not ready"));
                }
            }
            Operation::Metrics => {
                let handle = self.shared.metrics.clone();
                let text = glommio::executor().spawn_blocking(move || handle.render()).await;
                out.extend_from_slice(&text);
                resp.content_type = "text/plain; version=0.0.4";
            }
            Operation::ListNamespaces => {
                let parent = match query_pairs(req.query).find(|(k, _)| *k == "parent") {
                    Some((_, raw)) => {
                        parse_namespace(raw, &self.routes.separator, a).map_err(|e| e.to_api(req.path))?
                    }
                    None => &[],
                };
                catalog.list_namespaces(a, parent, req.query, out).await?;
            }
            Operation::CreateNamespace => catalog.create_namespace(a, req.body, out).await?,
            Operation::LoadNamespace => catalog.load_namespace(a, m.namespace, out).await?,
            Operation::NamespaceExists => {
                catalog.namespace_exists(a, m.namespace).await?;
                resp.empty(204);
            }
            Operation::DropNamespace => {
                catalog.drop_namespace(a, m.namespace).await?;
                resp.empty(204);
            }
            Operation::UpdateProperties => catalog.update_properties(a, m.namespace, req.body, out).await?,
            op => {
                return Err(ApiError::new(
                    ErrorKind::NotImplemented,
                    format!("{} is not implemented by this server", op.name()),
                ))
            }
        }
        Ok(())
    }
}
