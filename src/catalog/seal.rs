//! The final answer of an `Idempotency-Key` request, stored in the same
//! atomic batch as the mutation that decides it: once the mutation is
//! durable, so is the answer a retry replays, and a crash cannot fall
//! between the two.

use std::cell::Cell;

use super::commit::now_ms;
use crate::disk::Cause;
use crate::store::{Expect, Store, StoreError, Write};

/// The claimed idempotency record of the request, if it carries a key.
pub struct Seal<'r> {
    claim: Option<Claim<'r>>,
    sealed: Cell<bool>,
}

#[derive(Clone, Copy)]
struct Claim<'r> {
    key: &'r [u8],
    version: u64,
    op: u8,
}

impl<'r> Seal<'r> {
    /// A request without a key: mutations are applied as they are.
    pub fn none() -> Seal<'static> {
        Seal { claim: None, sealed: Cell::new(false) }
    }

    /// A request that claimed record `key` at `version` for operation `op`.
    pub fn claimed(key: &'r [u8], version: u64, op: u8) -> Seal<'r> {
        Seal { claim: Some(Claim { key, version, op }), sealed: Cell::new(false) }
    }

    /// Whether the request carries a key: its mutation stores the answer.
    pub fn keyed(&self) -> bool {
        self.claim.is_some()
    }

    /// Whether a mutation stored the final answer (nothing is left to settle).
    pub fn sealed(&self) -> bool {
        self.sealed.get()
    }

    /// Applies `batch` with the final answer (`status`, `body`) of a keyed
    /// request appended, atomically.
    pub(crate) async fn apply<S: Store>(
        &self,
        store: &S,
        batch: &[Write<'_>],
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let Some(claim) = self.claim else {
            return store.apply(batch).await;
        };
        let answer = encode_answer(claim.op, status, now_ms(), body);
        let mut writes = Vec::with_capacity(batch.len() + 1);
        writes.extend_from_slice(batch);
        writes.push(Write::put(claim.key, Expect::Version(claim.version), &answer));
        match store.apply(&writes).await {
            Ok(()) => {
                self.sealed.set(true);
                Ok(())
            }
            // A claim older than the stale limit was taken over: nothing
            // was written, and this request, which ran too long, may not
            // answer for the key.
            Err(StoreError::Conflict { index }) if index == batch.len() => {
                Err(StoreError::Io(Cause::Timeout, "the Idempotency-Key claim was taken over by a retry".into()))
            }
            Err(e) => Err(e),
        }
    }
}

impl Seal<'_> {
    /// Settles a claim no mutation sealed: stores the final answer (status
    /// below 500) for retries, or releases the claim after a 5xx so a retry
    /// runs again.
    pub async fn settle<S: Store>(&self, store: &S, status: u16, body: &[u8]) {
        let Some(claim) = self.claim.filter(|_| !self.sealed()) else {
            return;
        };
        let expect = Expect::Version(claim.version);
        let outcome = if status >= 500 {
            store.apply(&[Write::delete(claim.key, expect)]).await
        } else {
            let answer = encode_answer(claim.op, status, now_ms(), body);
            store.apply(&[Write::put(claim.key, expect, &answer)]).await
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "could not settle an idempotency record");
        }
    }
}

/// An idempotency record: operation, status (0: in progress), creation
/// time, and the answer's body.
pub fn encode_answer(op: u8, status: u16, created_ms: i64, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(11 + body.len());
    value.push(op);
    value.extend_from_slice(&status.to_le_bytes());
    value.extend_from_slice(&created_ms.to_le_bytes());
    value.extend_from_slice(body);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn run(test: impl AsyncFnOnce(SledStore) + Send + 'static) {
        let dir = std::env::temp_dir().join(format!("bingsan-seal-{}", uuid::Uuid::new_v4()));
        let store = SledStore::open(&dir).unwrap();
        glommio::LocalExecutorBuilder::default().spawn(move || test(store)).unwrap().join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    async fn get(store: &SledStore, key: &[u8]) -> Option<(u64, Vec<u8>)> {
        store.get(key).await.unwrap().map(|v| (v.version, v.value.as_ref().to_vec()))
    }

    /// Claims `key` as the idempotency code does: an in-progress record at version 1.
    async fn claim<'k>(store: &SledStore, key: &'k [u8]) -> Seal<'k> {
        store.apply(&[Write::put(key, Expect::Absent, &encode_answer(7, 0, 1, b""))]).await.unwrap();
        Seal::claimed(key, 1, 7)
    }

    #[test]
    fn the_answer_lands_in_the_mutations_batch_or_not_at_all() {
        run(async |store| {
            let seal = claim(&store, b"Ia").await;
            seal.apply(&store, &[Write::put(b"Ta", Expect::Absent, b"table")], 200, b"answer").await.unwrap();
            assert!(seal.sealed());
            assert_eq!(get(&store, b"Ta").await, Some((1, b"table".to_vec())));
            let (version, record) = get(&store, b"Ia").await.unwrap();
            assert_eq!((version, &record[..3], &record[11..]), (2, &[7, 200, 0][..], &b"answer"[..]));
            // Nothing is left to settle: a later settle changes nothing.
            seal.settle(&store, 500, b"").await;
            assert_eq!(get(&store, b"Ia").await.unwrap().0, 2);

            // A refused mutation stores no answer; the claim stays to settle.
            let seal = claim(&store, b"Ib").await;
            let refused = seal.apply(&store, &[Write::put(b"Ta", Expect::Absent, b"again")], 200, b"x").await;
            assert_eq!(refused, Err(StoreError::Conflict { index: 0 }));
            assert!(!seal.sealed());
            assert_eq!(get(&store, b"Ib").await, Some((1, encode_answer(7, 0, 1, b""))));
            seal.settle(&store, 409, b"exists").await;
            assert_eq!(&get(&store, b"Ib").await.unwrap().1[11..], b"exists");

            // A claim taken over by a retry: the mutation does not happen.
            let seal = claim(&store, b"Ic").await;
            store.apply(&[Write::put(b"Ic", Expect::Version(1), b"retry's")]).await.unwrap();
            let lost = seal.apply(&store, &[Write::put(b"Tc", Expect::Absent, b"table")], 200, b"x").await;
            assert!(matches!(lost, Err(StoreError::Io(Cause::Timeout, _))), "{lost:?}");
            assert_eq!(get(&store, b"Tc").await, None);
        });
    }
}
