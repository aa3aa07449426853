//! The shard's request handler: route, dispatch to the catalog, count.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bumpalo::Bump;
use glommio::sync::Semaphore;

use super::state::Shared;
use super::{idempotency, served};
use crate::catalog::{Encoding, Loaded, ObjectKind, Seal};
use crate::disk::{self, Target};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::FileIo;
use crate::http::percent::query_pairs;
use crate::http::{Request, Response, Service};
use crate::json::{check_limits, LimitError};
use crate::metrics::CommitOutcome;
use crate::metrics::ShardStats;
use crate::pool::{ArenaPool, BufPool};
use crate::routes::{parse_namespace, route, Matched, Operation, RouteConfig, RouteError, Source};
use crate::store::{Store, WRITES_REFUSED};

/// One per shard; shared by that shard's connections through an `Rc`.
pub struct ShardService<S: Store, F: FileIo> {
    pub shared: Arc<Shared<S, F>>,
    pub routes: Rc<RouteConfig>,
    pub arenas: Rc<ArenaPool>,
    pub stats: Arc<ShardStats>,
    pub json: JsonLimits,
    /// The shard's token buffers: access tokens are minted into them.
    pub tokens: Rc<BufPool>,
    /// Permits for requests that open warehouse files: a burst of writers
    /// queues here instead of running the process out of descriptors.
    pub writes: Semaphore,
    /// Credentials vended on this shard, by table location.
    pub vend_cache: crate::delegation::cache::Cache,
}

/// Bounds on JSON request bodies, checked before any parser sees them.
#[derive(Clone, Copy, Debug)]
pub struct JsonLimits {
    pub max_depth: usize,
    pub max_string: usize,
}

impl<S: Store, F: FileIo> Service for ShardService<S, F> {
    async fn call(&self, req: &Request<'_>, resp: &mut Response) {
        let started = Instant::now();
        // One arena per request: requests interleave at awaits, so they
        // must never share scratch memory.
        let arena = self.arenas.get();
        let routed = route(req.method, req.path, &self.routes, &arena);
        // Authentication first: without a valid token a request learns nothing more.
        let denied = self.shared.auth.deny(routed.as_ref().ok().map(|m| m.op), req, resp);
        let op = match routed {
            Ok(ref m) if denied => m.op,
            Err(_) if denied => Operation::Unmatched,
            Ok(m) => {
                // Refused writes fail fast, without queueing for a permit.
                let outcome = match m.op.spec().mutation.then(|| self.writes_allowed()) {
                    Some(Err(refused)) => Err(refused),
                    _ => {
                        // The semaphore is never closed, so acquiring cannot fail.
                        let _permit =
                            if m.op.spec().warehouse { self.writes.acquire_permit(1).await.ok() } else { None };
                        let done = self.idempotent(&m, req, &arena, resp).await;
                        // After the idempotency record is sealed: no credential is stored.
                        self.delegate(m.op, req, &arena, resp).await;
                        done
                    }
                };
                if let Err(e) = outcome {
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
        if op.spec().commit {
            self.stats.commit(match resp.status {
                200..=299 => CommitOutcome::Ok,
                409 => CommitOutcome::Conflict,
                _ => CommitOutcome::Failed,
            });
        }
        if op.spec().mutation && (200..300).contains(&resp.status) {
            // Every mutation writes the store: it takes writes again.
            disk::write_succeeded(Target::Store);
        }
        let micros = started.elapsed().as_micros() as u64;
        self.stats.record(op, resp.status, micros);
        tracing::debug!(method = req.method.as_str(), path = req.path, status = resp.status, micros, "request");
        if resp.status >= 500 {
            tracing::warn!(method = req.method.as_str(), path = req.path, status = resp.status, "request failed");
        }
    }
}

impl<S: Store, F: FileIo> ShardService<S, F> {
    /// Whether a mutation may run: not after a failed store sync (until a
    /// restart), not while the disk watcher holds the gate closed. Refused
    /// before the write permit and any file: the outcome is known.
    fn writes_allowed(&self) -> ApiResult<()> {
        if !self.shared.store.writable() {
            return Err(ApiError::new(ErrorKind::ServiceUnavailable, WRITES_REFUSED));
        }
        disk::check_writable()
    }

    /// Dispatches, honouring `Idempotency-Key` on mutations.
    async fn idempotent(&self, m: &Matched<'_>, req: &Request<'_>, a: &Bump, resp: &mut Response) -> ApiResult<()> {
        if !req.body.is_empty() && !m.op.spec().form {
            check_limits(req.body, self.json.max_depth, self.json.max_string).map_err(|e| match e {
                LimitError::TooDeep => {
                    ApiError::bad_request(format!("JSON nested deeper than {}", self.json.max_depth))
                }
                LimitError::StringTooLong => {
                    ApiError::bad_request(format!("JSON string longer than {} bytes", self.json.max_string))
                }
            })?;
        }
        let key = match req.header("idempotency-key") {
            Some(k) if m.op.spec().mutation => Some(idempotency::validate(k)?),
            _ => None,
        };
        let Some(key) = key else {
            return self.dispatch(m, req, a, resp, &Seal::none()).await;
        };
        // Idempotency keys are the warehouse's own, like everything it stores.
        let store = &self.shared.warehouses[m.warehouse].catalog.store;
        let idempotency::Claim::Owned(seal) = idempotency::claim(store, a, key, m.op, resp).await? else {
            return Ok(());
        };
        if let Err(e) = self.dispatch(m, req, a, resp, &seal).await {
            resp.error(&e);
        }
        #[cfg(debug_assertions)]
        idempotency::crash_point(resp.status);
        seal.settle(store, resp.status, &resp.body).await;
        Ok(())
    }

    /// Runs the operation; a mutation stores its answer under `seal`.
    async fn dispatch(
        &self,
        m: &Matched<'_>,
        req: &Request<'_>,
        a: &Bump,
        resp: &mut Response,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        let warehouses = &self.shared.warehouses;
        let catalog = &warehouses[m.warehouse].catalog;
        // Mutably dereferenced, hence taken from the pool, where an arm writes it.
        let out = &mut resp.body;
        match m.op {
            Operation::GetConfig => {
                let asked = if self.shared.named_warehouse {
                    served::asked(req.query, warehouses.iter().map(|w| w.warehouse.name.as_str()))
                } else {
                    Some(0)
                };
                let Some(asked) = asked else {
                    return Err(ApiError::new(ErrorKind::NotFound, "no such warehouse"));
                };
                out.extend_from_slice(&warehouses[asked].config_body)
            }
            Operation::GetToken => self.shared.auth.token_endpoint(req, a, &self.tokens, resp).await,
            Operation::HealthLive => out.extend_from_slice(b"{\"status\":\"ok\"}"),
            Operation::HealthReady => {
                if self.shared.ready() {
                    out.extend_from_slice(b"{\"status\":\"ready\"}");
                } else {
                    let why = if self.shared.store.writable() { "not ready" } else { WRITES_REFUSED };
                    return Err(ApiError::new(ErrorKind::ServiceUnavailable, why));
                }
            }
            Operation::HealthWritable => match disk::state().unwritable() {
                None => out.extend_from_slice(b"{\"status\":\"writable\"}"),
                Some((target, cause)) => {
                    return Err(ApiError::new(
                        ErrorKind::ServiceUnavailable,
                        format!("not writable: the {}: {}", target.name(), cause.message()),
                    ))
                }
            },
            Operation::Metrics => {
                let handle = self.shared.metrics.clone();
                let text = glommio::executor().spawn_blocking(move || handle.render()).await;
                out.extend_from_slice(&text);
                resp.content_type = "text/plain; version=0.0.4";
            }
            Operation::ListNamespaces => {
                // The spec treats an empty `parent` as absent: the top level.
                let parent = match query_pairs(req.query).find(|(k, _)| *k == "parent") {
                    Some((_, raw)) if !raw.is_empty() => parse_namespace(raw, Source::Query, &self.routes.separator, a)
                        .map_err(|e| e.to_api(req.path))?,
                    _ => &[],
                };
                catalog.list_namespaces(a, parent, req.query, out).await?;
            }
            Operation::CreateNamespace => catalog.create_namespace(a, req.body, out, seal).await?,
            Operation::LoadNamespace => catalog.load_namespace(a, m.namespace, out).await?,
            Operation::NamespaceExists => {
                catalog.namespace_exists(a, m.namespace).await?;
                resp.empty(204);
            }
            Operation::DropNamespace => {
                catalog.drop_namespace(a, m.namespace, seal).await?;
                resp.empty(204);
            }
            Operation::UpdateProperties => catalog.update_properties(a, m.namespace, req.body, out, seal).await?,
            Operation::ListTables => catalog.list_objects(a, ObjectKind::Table, m.namespace, req.query, out).await?,
            Operation::CreateTable => catalog.create_table(a, m.namespace, req.body, out, seal).await?,
            Operation::LoadTable => {
                let inm = req.header("if-none-match");
                let gzip = accepts_gzip(req) && !self.wants_delegation(req);
                let loaded = catalog.load_table(a, m.namespace, m.name, req.query, inm, gzip, out).await?;
                // Either answer depends on Accept-Encoding, 304s and plain ones too.
                resp.header("Vary", b"Accept-Encoding");
                match loaded {
                    Loaded::Body(etag, encoding) => {
                        resp.header("ETag", etag.as_bytes());
                        content_encoding(resp, encoding);
                    }
                    Loaded::NotModified(etag) => {
                        resp.header("ETag", etag.as_bytes());
                        resp.empty(304);
                    }
                }
            }
            Operation::TableExists => {
                catalog.table_exists(a, m.namespace, m.name).await?;
                resp.empty(204);
            }
            Operation::UpdateTable => catalog.commit_table(a, m.namespace, m.name, req.body, out, seal).await?,
            Operation::DropTable => {
                catalog.drop_table(a, m.namespace, m.name, req.query, seal).await?;
                resp.empty(204);
            }
            Operation::RegisterTable => catalog.register_table(a, m.namespace, req.body, out, seal).await?,
            Operation::RenameTable => {
                catalog.rename(a, ObjectKind::Table, req.body, seal).await?;
                resp.empty(204);
            }
            Operation::ReportMetrics => {
                catalog.report_metrics(a, m.namespace, m.name, req.body).await?;
                resp.empty(204);
            }
            Operation::CommitTransaction => {
                catalog.commit_transaction(a, req.body, seal).await?;
                resp.empty(204);
            }
            Operation::LoadCredentials => self.load_credentials(m, req, a, out).await?,
            Operation::SignS3Request => self.sign_s3(req, a, out).await?,
            Operation::ListViews => catalog.list_objects(a, ObjectKind::View, m.namespace, req.query, out).await?,
            Operation::CreateView => catalog.create_view(a, m.namespace, req.body, out, seal).await?,
            Operation::LoadView => {
                let encoding = catalog.load_view(a, m.namespace, m.name, accepts_gzip(req), out).await?;
                resp.header("Vary", b"Accept-Encoding");
                content_encoding(resp, encoding);
            }
            Operation::ViewExists => {
                catalog.view_exists(a, m.namespace, m.name).await?;
                resp.empty(204);
            }
            Operation::ReplaceView => catalog.replace_view(a, m.namespace, m.name, req.body, out, seal).await?,
            Operation::DropView => {
                catalog.drop_view(a, m.namespace, m.name, seal).await?;
                resp.empty(204);
            }
            Operation::RenameView => {
                catalog.rename(a, ObjectKind::View, req.body, seal).await?;
                resp.empty(204);
            }
            Operation::RegisterView => catalog.register_view(a, m.namespace, req.body, out, seal).await?,
            // The router never names it: a request that matched no route is answered there.
            Operation::Unmatched => return Err(ApiError::new(ErrorKind::NotFound, "no route")),
        }
        Ok(())
    }
}

/// Whether the client takes a gzip answer.
fn accepts_gzip(req: &Request<'_>) -> bool {
    req.header("accept-encoding").is_some_and(crate::http::accept::accepts_gzip)
}

/// Labels a body served in `encoding`.
fn content_encoding(resp: &mut Response, encoding: Encoding) {
    if encoding == Encoding::Gzip {
        resp.header("Content-Encoding", b"gzip");
    }
}
