//! The shard's side of access delegation: fills the credentials (or the
//! signer) into a table's answer, serves `/credentials` and the S3 signer.

use std::rc::Rc;
use std::time::SystemTime;

use bumpalo::Bump;

use super::service::ShardService;
use crate::catalog::now_ms;
use crate::delegation::signer::{check_target, sign, SignRequest};
use crate::delegation::sts::{StsError, Vended};
use crate::delegation::{
    fill_load_result, result_location, vend_blocking, write_signing, write_storage_credentials, write_vended, Mode,
    Requested, Target,
};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::FileIo;
use crate::http::percent::query_pairs;
use crate::http::{Request, Response};
use crate::routes::{Matched, Operation};
use crate::store::Store;

/// The request header naming the modes a client accepts.
const HEADER: &str = "x-iceberg-access-delegation";

/// The 503 of a failed vend: what failed, never STS's endpoint, role or
/// message (those go to the log).
fn unavailable(why: &str) -> ApiError {
    ApiError::new(ErrorKind::ServiceUnavailable, format!("cannot vend credentials for this table now: {why}"))
}

fn sts_unavailable(e: &StsError) -> ApiError {
    unavailable(match e {
        StsError::Refused(_) => "STS refused to issue them",
        StsError::Unreachable(_) => "STS did not answer in time",
        StsError::Malformed => "STS answered without credentials",
    })
}

impl<S: Store, F: FileIo> ShardService<S, F> {
    /// After a load, create or register answered 200: fills its `config`
    /// with what the client asked for and the table's warehouse gives. A
    /// create or register is done by then: a failed vend is logged and the
    /// answer goes out without credentials rather than as a failure.
    pub(super) async fn delegate(&self, op: Operation, req: &Request<'_>, a: &Bump, resp: &mut Response) {
        let d = &self.shared.delegation;
        if !d.enabled()
            || resp.status != 200
            || !matches!(op, Operation::LoadTable | Operation::CreateTable | Operation::RegisterTable)
        {
            return;
        }
        let requested = Requested::from_header(req.header(HEADER));
        if !requested.any() {
            return;
        }
        let Some(location) = result_location(&resp.body, a) else { return };
        let Some(target) = d.target(location, requested) else { return };
        match target.mode {
            Mode::Vended => match self.vended(target, location).await {
                Ok(v) => fill_load_result(&mut resp.body, location, true, |o| write_vended(o, target, &v)),
                Err(e) if op == Operation::LoadTable => {
                    resp.body.clear();
                    resp.error(&e);
                }
                Err(e) => tracing::warn!(error = %e.message, location, "answering without vended credentials"),
            },
            Mode::RemoteSigning => {
                let auth = &self.shared.auth;
                let principal = match auth.principal(req, a) {
                    Some(p) => p,
                    // Under --auth a grant names who may use it.
                    None if auth.required() => {
                        tracing::warn!(location, "no principal to grant remote signing to (a JWT without sub)");
                        return;
                    }
                    None => "",
                };
                let uri = self.signer_uri(req, a);
                fill_load_result(&mut resp.body, location, false, |o| {
                    write_signing(o, target, &d.grants, uri, location, principal)
                });
            }
        }
    }

    /// Whether this request asks a delegating catalog to fill its answer's
    /// `config`: then the answer must be plain JSON, not a stored gzip form
    /// (stored without credentials, and not editable in place).
    pub(super) fn wants_delegation(&self, req: &Request<'_>) -> bool {
        self.shared.delegation.enabled() && Requested::from_header(req.header(HEADER)).any()
    }

    /// Credentials for `location`: the shard's cached ones while fresh,
    /// else a new `AssumeRole` on the blocking pool (never on the shard).
    async fn vended(&self, target: &Target, location: &str) -> ApiResult<Rc<Vended>> {
        let now = now_ms().max(0) as u64;
        if let Some(v) = self.vend_cache.get(location, now) {
            return Ok(v);
        }
        if target.mode != Mode::Vended {
            return Err(unavailable("the warehouse does not vend credentials"));
        }
        let key = target.keys.current().await.map_err(unavailable)?;
        let d = self.shared.delegation.clone();
        let loc = location.to_owned();
        let result = glommio::executor()
            .spawn_blocking(move || {
                let target = d.holding(&loc).ok_or_else(|| unavailable("no warehouse holds the table"))?;
                vend_blocking(target, &key, &loc).map_err(|e| {
                    tracing::warn!(error = %e, location = loc, "vending failed");
                    sts_unavailable(&e)
                })
            })
            .await;
        let v = Rc::new(result?);
        self.vend_cache.put(location, v.clone(), now);
        Ok(v)
    }

    /// `GET .../tables/{t}/credentials`.
    pub(super) async fn load_credentials(
        &self,
        m: &Matched<'_>,
        req: &Request<'_>,
        a: &Bump,
        out: &mut Vec<u8>,
    ) -> ApiResult<()> {
        let location = self.shared.warehouses[m.warehouse].catalog.table_location(a, m.namespace, m.name).await?;
        let requested = Requested { vended: true, ..Requested::from_header(req.header(HEADER)) };
        out.extend_from_slice(b"{\"storage-credentials\":");
        match self.shared.delegation.target(&location, requested) {
            Some(t) => {
                let v = self.vended(t, &location).await?;
                write_storage_credentials(out, &location, |o| write_vended(o, t, &v));
            }
            None => out.extend_from_slice(b"[]"),
        }
        out.push(b'}');
        Ok(())
    }

    /// The catalog as this client reached it, for `s3.signer.uri`.
    fn signer_uri<'a>(&self, req: &Request<'_>, a: &'a Bump) -> Option<&'a str> {
        let host = req.header_str("host")?;
        let scheme = if self.shared.delegation.https { "https" } else { "http" };
        Some(bumpalo::format!(in a, "{}://{}", scheme, host).into_bump_str())
    }

    /// `POST /v1/aws/s3/sign?grant=...`: signs the request in the body if
    /// the grant is valid, was given to this caller (under `--auth`, the
    /// bearer token's principal), and the request's object lies under its
    /// location.
    pub(super) async fn sign_s3(&self, req: &Request<'_>, a: &Bump, out: &mut Vec<u8>) -> ApiResult<()> {
        let refused = |why: &str| ApiError::new(ErrorKind::Forbidden, format!("not signed: {why}"));
        let d = &self.shared.delegation;
        let grant = query_pairs(req.query).find(|(k, _)| *k == "grant").map(|(_, v)| v);
        let now = SystemTime::now();
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |t| t.as_secs());
        let principal = self.shared.auth.principal(req, a).unwrap_or_default();
        let location = grant
            .and_then(|g| d.grants.check(g, principal, secs))
            .ok_or_else(|| refused("no valid grant for this caller; load the table with remote-signing first"))?;
        let body: SignRequest =
            sonic_rs::from_slice(req.body).map_err(|_| ApiError::bad_request("invalid S3SignRequest"))?;
        let target = d
            .holding(&location)
            .filter(|t| t.mode == Mode::RemoteSigning)
            .ok_or_else(|| refused("the table's warehouse does not sign requests"))?;
        check_target(&body.uri, &body.method, &location, a)?;
        let key = target.keys.current().await.map_err(|why| ApiError::new(ErrorKind::ServiceUnavailable, why))?;
        sign(&body, &key, now, out)
    }
}
