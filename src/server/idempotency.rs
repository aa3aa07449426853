//! `Idempotency-Key`: a retried mutation gets the first final answer again.
//!
//! Final answers (any status below 500) are stored in the shared store under
//! the key, with the operation they answered, so every shard and every
//! restart sees them. Records older than the advertised lifetime plus a
//! grace period are ignored and eventually swept.
//!
//! The record is written after the mutation commits, not in the same batch:
//! a crash in between loses the key, and the retry executes again (and
//! typically answers with the 409 that the first execution's effect causes).

use bumpalo::Bump;

use crate::error::{ApiError, ApiResult};
use crate::http::Response;
use crate::routes::Operation;
use crate::store::{keys, Expect, Store, Write};

/// Advertised in `/v1/config` as `idempotency-key-lifetime`.
pub const LIFETIME: &str = "PT30M";
/// How long records are honoured: the lifetime plus a grace period.
pub const KEEP_MS: i64 = 60 * 60 * 1000;

/// Whether `op` mutates and so honours `Idempotency-Key`.
pub fn applies(op: Operation) -> bool {
    use Operation::*;
    matches!(
        op,
        CreateNamespace
            | DropNamespace
            | UpdateProperties
            | CreateTable
            | UpdateTable
            | DropTable
            | RegisterTable
            | RenameTable
            | CommitTransaction
            | CreateView
            | ReplaceView
            | DropView
            | RenameView
            | RegisterView
    )
}

/// Checks the header value: a UUID in its 36-character text form.
pub fn validate(key: &[u8]) -> ApiResult<&str> {
    let text = std::str::from_utf8(key).ok().filter(|k| k.len() == 36 && uuid::Uuid::parse_str(k).is_ok());
    text.ok_or_else(|| ApiError::bad_request("Idempotency-Key must be a UUID (36 characters)"))
}

fn record_key<'a>(a: &'a Bump, key: &str) -> &'a [u8] {
    let out = a.alloc_slice_fill_copy(1 + key.len(), keys::IDEMPOTENCY);
    // Keys are case-insensitive UUIDs: store them lower-cased.
    for (o, b) in out[1..].iter_mut().zip(key.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    out
}

/// Replays a stored final answer into `resp`; `Ok(false)` when there is none.
pub async fn replay<S: Store>(store: &S, a: &Bump, key: &str, op: Operation, now_ms: i64, resp: &mut Response) -> ApiResult<bool> {
    let Some(rec) = store.get(record_key(a, key)).await.map_err(crate::catalog::store_failure)? else {
        return Ok(false);
    };
    let raw = rec.value.as_ref();
    let Some(stored) = Stored::decode(raw) else {
        return Ok(false);
    };
    if now_ms - stored.created_ms > KEEP_MS {
        return Ok(false);
    }
    if stored.op != op.index() as u8 {
        return Err(ApiError::new(
            crate::error::ErrorKind::UnprocessableEntity,
            "Idempotency-Key was already used for a different operation",
        ));
    }
    resp.status = stored.status;
    resp.body.clear();
    resp.body.extend_from_slice(stored.body);
    Ok(true)
}

/// Stores a final answer (status below 500) for later retries.
pub async fn remember<S: Store>(store: &S, a: &Bump, key: &str, op: Operation, now_ms: i64, resp: &Response) {
    if resp.status >= 500 {
        return;
    }
    let mut value = Vec::with_capacity(11 + resp.body.len());
    value.push(op.index() as u8);
    value.extend_from_slice(&resp.status.to_le_bytes());
    value.extend_from_slice(&now_ms.to_le_bytes());
    value.extend_from_slice(&resp.body);
    if let Err(e) = store.apply(&[Write::put(record_key(a, key), Expect::Any, &value)]).await {
        tracing::warn!(error = %e, "could not store an idempotency record");
    }
}

/// Deletes records past their keep time; returns how many.
pub async fn sweep<S: Store>(store: &S, now_ms: i64) -> usize {
    let mut expired: Vec<Vec<u8>> = Vec::new();
    let prefix = [keys::IDEMPOTENCY];
    let scanned = store
        .scan(&prefix, None, |k, v| {
            if Stored::decode(v.value).is_some_and(|s| now_ms - s.created_ms > KEEP_MS) {
                expired.push(k.to_vec());
            }
            expired.len() < 10_000
        })
        .await;
    if scanned.is_err() {
        return 0;
    }
    let mut n = 0;
    for k in &expired {
        if store.apply(&[Write::delete(k, Expect::Present)]).await.is_ok() {
            n += 1;
        }
    }
    n
}

struct Stored<'a> {
    op: u8,
    status: u16,
    created_ms: i64,
    body: &'a [u8],
}

impl<'a> Stored<'a> {
    fn decode(raw: &'a [u8]) -> Option<Stored<'a>> {
        Some(Stored {
            op: *raw.first()?,
            status: u16::from_le_bytes(raw.get(1..3)?.try_into().ok()?),
            created_ms: i64::from_le_bytes(raw.get(3..11)?.try_into().ok()?),
            body: raw.get(11..)?,
        })
    }
}
