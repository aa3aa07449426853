//! `Idempotency-Key`: a retried mutation gets the first final answer again.
//!
//! Final answers (any status below 500) are stored in the shared store under
//! the key, with the operation they answered, so every shard and every
//! restart sees them. Records older than the advertised lifetime plus a
//! grace period are ignored and eventually swept.
//!
//! Before running, a request claims its key with an "in progress" record
//! (compare-and-swap), so concurrent attempts with one key wait for the first
//! one's answer instead of running again. The final answer replaces the
//! claim (again by compare-and-swap, so a final answer is never overwritten).
//! A request that mutates stores it in the same atomic batch as its mutation
//! ([`Seal`]), so a crash can never leave a mutation without its answer; an
//! answer that mutated nothing (a 4xx, a no-op) is stored afterwards by
//! [`Seal::settle`]. A 5xx removes the claim so a retry runs. A claim whose request
//! died with its server goes stale after [`STALE_CLAIM_MS`]; a retry then runs
//! again, which is right since that request's mutation did not happen.

use bumpalo::Bump;

use crate::catalog::{encode_answer, Seal};
use crate::error::{ApiError, ApiResult};
use crate::http::Response;
use crate::routes::Operation;
use crate::store::{keys, Expect, Store, Write};

/// Advertised in `/v1/config` as `idempotency-key-lifetime`.
pub const LIFETIME: &str = "PT30M";
/// How long records are honoured: the lifetime plus a grace period.
pub const KEEP_MS: i64 = 60 * 60 * 1000;

/// A claim older than this belongs to a request that died with its server.
pub const STALE_CLAIM_MS: i64 = 60 * 1000;
/// How long a concurrent attempt waits for the first one's answer.
const WAIT_FOR_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);
/// Status stored in a claim: the request is still running.
const IN_PROGRESS: u16 = 0;

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

/// What to do with a request that carries a key.
pub enum Claim<'a> {
    /// A final answer was replayed into the response: do not run.
    Replayed,
    /// This request owns the key: run, sealing the answer into the
    /// mutation's batch, then settle if nothing did.
    Owned(Seal<'a>),
}

/// Replays the final answer stored under `key`, or claims the key for this
/// request, waiting while another request holds a fresh claim.
pub async fn claim<'a, S: Store>(
    store: &S,
    a: &'a Bump,
    key: &str,
    op: Operation,
    resp: &mut Response,
) -> ApiResult<Claim<'a>> {
    let rkey = record_key(a, key);
    let deadline = std::time::Instant::now() + WAIT_FOR_ANSWER;
    loop {
        let now = crate::catalog::now_ms();
        let current = store.get(rkey).await.map_err(crate::catalog::store_failure)?;
        let expect = match &current {
            None => Expect::Absent,
            Some(rec) => match Stored::decode(rec.value.as_ref()) {
                Some(s) if s.status != IN_PROGRESS && now - s.created_ms <= KEEP_MS => {
                    if s.op != op.index() as u8 {
                        return Err(ApiError::new(
                            crate::error::ErrorKind::UnprocessableEntity,
                            "Idempotency-Key was already used for a different operation",
                        ));
                    }
                    resp.status = s.status;
                    resp.body.clear();
                    resp.body.extend_from_slice(s.body);
                    return Ok(Claim::Replayed);
                }
                Some(s) if s.status == IN_PROGRESS && now - s.created_ms <= STALE_CLAIM_MS => {
                    if std::time::Instant::now() >= deadline {
                        return Err(ApiError::new(
                            crate::error::ErrorKind::ServiceUnavailable,
                            "a request with this Idempotency-Key is still in progress; retry later",
                        ));
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                // Expired answer, stale claim, or unreadable: take it over.
                _ => Expect::Version(rec.version),
            },
        };
        let claim = encode(op, IN_PROGRESS, now, &[]);
        match store.apply(&[Write::put(rkey, expect, &claim)]).await {
            Ok(()) => {
                let version = match expect {
                    Expect::Version(v) => v + 1,
                    _ => 1,
                };
                return Ok(Claim::Owned(Seal::claimed(rkey, version, op.index() as u8)));
            }
            Err(crate::store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(crate::catalog::write_failure(e)),
        }
    }
}

fn encode(op: Operation, status: u16, created_ms: i64, body: &[u8]) -> Vec<u8> {
    encode_answer(op.index() as u8, status, created_ms, body)
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

/// Debug builds only: with `BINGSAN_TEST_CRASH_AFTER_MUTATION` set, the
/// process kills itself (SIGKILL, as `kill -9`) once a keyed request has
/// succeeded and before its answer is settled or sent: the regression test
/// that a retry still gets that answer (tests/python/test_idempotency.py).
#[cfg(debug_assertions)]
pub fn crash_point(status: u16) {
    static ON: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("BINGSAN_TEST_CRASH_AFTER_MUTATION").is_some());
    if *ON && status < 300 {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
