//! The location index: which live table or view owns which location, so
//! no two of them overlap (equal, one inside the other) and a purge deletes
//! only what its table owns.
//!
//! A claim is a `keys::LOCATION` key (value: the owner's object key) put in
//! the same atomic batch as the owner's record. Claiming `P` checks, in
//! that batch, that no enclosing location is claimed, and that
//! `keys::BENEATH` of `P` is still at the version read before scanning for
//! claims inside `P`; every claim bumps `BENEATH` of each enclosing
//! location. Two concurrent claims of nested locations therefore conflict:
//! whichever lands second finds the other's claim or a moved `BENEATH`.

use bumpalo::Bump;
use serde::Deserialize;

use super::kind::ObjectKind;
use super::namespaces::parse_json;
use super::{store_failure, Catalog};
use crate::error::{ApiError, ApiResult};
use crate::fileio::location::ancestors;
use crate::fileio::{FileIo, LocationError};
use crate::store::{keys, Expect, Store, StoreError, Write};

/// Where stored metadata (table or view) puts its files.
#[derive(Deserialize)]
pub(crate) struct Placement {
    pub location: String,
    #[serde(rename = "metadata-log", default)]
    pub metadata_log: Vec<LogEntry>,
}

#[derive(Deserialize)]
pub(crate) struct LogEntry {
    #[serde(rename = "metadata-file")]
    pub metadata_file: String,
}

impl Placement {
    pub fn of(metadata: &[u8]) -> ApiResult<Placement> {
        parse_json(metadata, "stored metadata")
    }
}

/// The 400 for a location a client asked for that the warehouse refuses.
pub(crate) fn unusable(requested: &str, e: LocationError) -> ApiError {
    ApiError::bad_request(format!("unusable location {requested}: {e}"))
}

pub(crate) fn overlaps(location: &str) -> ApiError {
    ApiError::bad_request(format!("location {location} overlaps the location of another table or view"))
}

/// Whether two normalised locations overlap: equal, or one inside the other.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let inside =
        |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|r| r.is_empty() || r.starts_with('/'));
    inside(a, b) || inside(b, a)
}

/// The migration that indexed the locations of objects created before the index.
const INDEXED: &str = "locations-v1";

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// A location as the warehouse will hold it: normalised, with its
    /// scheme, inside the warehouse; else the client's 400.
    pub(crate) fn resolve_location(&self, requested: &str) -> ApiResult<String> {
        self.files.resolve(requested).map_err(|e| unusable(requested, e))
    }

    /// The version of `key`, if present.
    async fn version_of(&self, key: &[u8]) -> ApiResult<Option<u64>> {
        Ok(self.store.get(key).await.map_err(store_failure)?.map(|v| v.version))
    }

    /// Whether `owner` holds the claim at `key`; its version if so.
    async fn owned_claim(&self, key: &[u8], owner: &[u8]) -> ApiResult<Option<u64>> {
        let rec = self.store.get(key).await.map_err(store_failure)?;
        Ok(rec.filter(|r| r.value.as_ref() == owner).map(|r| r.version))
    }

    /// The writes that move `owner`'s claim from `old` (its current
    /// location, normalised; none for a new object) to `new` (resolved),
    /// after checking that `new` overlaps no other live location now (400).
    /// The writes re-check that atomically: a conflict on them means
    /// something changed meanwhile and the caller retries.
    pub(crate) async fn claim_location<'a>(
        &self,
        a: &'a Bump,
        owner: &'a [u8],
        new: &str,
        old: Option<&str>,
    ) -> ApiResult<Vec<Write<'a>>> {
        let mut writes = Vec::new();
        if old == Some(new) {
            return Ok(writes);
        }
        let mut released = None;
        if let Some(old) = old {
            let key = keys::location(a, keys::LOCATION, old);
            if let Some(version) = self.owned_claim(key, owner).await? {
                writes.push(Write::delete(key, Expect::Version(version)));
                released = Some(old);
            }
        }
        let key = keys::location(a, keys::LOCATION, new);
        if self.version_of(key).await?.is_some() {
            return Err(overlaps(new));
        }
        writes.push(Write::put(key, Expect::Absent, owner));
        let root = self.files.root();
        for outer in ancestors(root, new) {
            // Its own old claim, released in this batch, may enclose the new one.
            if Some(outer) != released {
                let outer_key = keys::location(a, keys::LOCATION, outer);
                if self.version_of(outer_key).await?.is_some() {
                    return Err(overlaps(new));
                }
                writes.push(Write::check(outer_key, Expect::Absent));
            }
            writes.push(Write::put(keys::location(a, keys::BENEATH, outer), Expect::Any, b""));
        }
        // Read before the scan: a claim inside `new` landing after the scan moves it.
        let beneath = keys::location(a, keys::BENEATH, new);
        let beneath_expect = match self.version_of(beneath).await? {
            Some(version) => Expect::Version(version),
            None => Expect::Absent,
        };
        let mut inside = false;
        self.store
            .scan(keys::locations_inside(a, new), None, |_, claim| {
                inside = claim.value != owner;
                !inside
            })
            .await
            .map_err(store_failure)?;
        if inside {
            return Err(overlaps(new));
        }
        writes.push(Write::check(beneath, beneath_expect));
        Ok(writes)
    }

    /// The normalised location of an object's stored metadata, if local.
    pub(crate) fn stored_location(&self, metadata: &[u8]) -> ApiResult<Option<String>> {
        Ok(self.files.normalise(&Placement::of(metadata)?.location).ok())
    }

    /// The writes that end `owner`'s claim of `location` as it is dropped
    /// (none if it holds none): released at once or, for a purge, handed to
    /// the purge's marker until [`Catalog::end_purge`], so that nothing new
    /// claims the location while its files are deleted.
    pub(crate) async fn drop_claim<'a>(
        &self,
        a: &'a Bump,
        owner: &[u8],
        location: Option<&str>,
        purge: bool,
    ) -> ApiResult<Vec<Write<'a>>> {
        let Some(location) = location else { return Ok(Vec::new()) };
        let key = keys::location(a, keys::LOCATION, location);
        let Some(version) = self.owned_claim(key, owner).await? else { return Ok(Vec::new()) };
        if !purge {
            return Ok(vec![Write::delete(key, Expect::Version(version))]);
        }
        let marker = keys::location(a, keys::PURGING, location);
        Ok(vec![Write::put(key, Expect::Version(version), marker), Write::put(marker, Expect::Any, b"")])
    }

    /// Releases the claim a purge of `location` held, once its files are gone.
    pub(crate) async fn end_purge(&self, a: &Bump, location: &str) -> Result<(), StoreError> {
        let marker = keys::location(a, keys::PURGING, location);
        let key = keys::location(a, keys::LOCATION, location);
        let mut batch = vec![Write::delete(marker, Expect::Any)];
        if let Some(claim) = self.store.get(key).await?.filter(|c| c.value.as_ref() == marker) {
            batch.push(Write::delete(key, Expect::Version(claim.version)));
        }
        self.store.apply(&batch).await
    }

    /// Releases the claims of purges a crash interrupted (their files may
    /// remain); run at start, before any request.
    pub async fn end_interrupted_purges(&self) -> Result<usize, StoreError> {
        let mut locations = Vec::new();
        self.store
            .scan_keys(&[keys::PURGING], None, |key| {
                locations.push(String::from_utf8_lossy(&key[1..]).into_owned());
                true
            })
            .await?;
        let a = Bump::new();
        for location in &locations {
            self.end_purge(&a, location).await?;
        }
        Ok(locations.len())
    }

    /// The write that hands `from`'s claim of `location` to `to` (a rename).
    pub(crate) async fn hand_over_location<'a>(
        &self,
        a: &'a Bump,
        from: &[u8],
        to: &'a [u8],
        location: Option<&str>,
    ) -> ApiResult<Option<Write<'a>>> {
        let Some(location) = location else { return Ok(None) };
        let key = keys::location(a, keys::LOCATION, location);
        Ok(self.owned_claim(key, from).await?.map(|v| Write::put(key, Expect::Version(v), to)))
    }

    /// Claimed locations strictly inside `location`.
    pub(crate) async fn claims_inside(&self, a: &Bump, location: &str) -> ApiResult<Vec<String>> {
        let prefix = keys::locations_inside(a, location);
        let mut found = Vec::new();
        self.store
            .scan_keys(prefix, None, |key| {
                found.push(String::from_utf8_lossy(&key[1..]).into_owned());
                true
            })
            .await
            .map_err(store_failure)?;
        Ok(found)
    }

    /// Whether a file or directory is, or lies in, a location claimed by
    /// anyone but `ours`.
    pub(crate) async fn in_claimed_location(&self, a: &Bump, path: &str, ours: &[u8]) -> ApiResult<bool> {
        let Ok(path) = self.files.normalise(path) else { return Ok(false) };
        for outer in ancestors(self.files.root(), &path).chain([path.as_str()]) {
            let claim = self.store.get(keys::location(a, keys::LOCATION, outer)).await.map_err(store_failure)?;
            if claim.is_some_and(|c| c.value.as_ref() != ours) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Claims the location of every table and view stored before the index
    /// existed, once (a marker key records it). Objects that overlap one
    /// already claimed keep working but stay unclaimed: logged, and purges
    /// skip the claimed location. Returns how many were claimed.
    pub async fn index_locations(&self) -> Result<usize, StoreError> {
        let a = Bump::new();
        let marker = keys::location(&a, keys::MIGRATION, INDEXED);
        if self.store.get(marker).await?.is_some() {
            return Ok(0);
        }
        let mut objects = Vec::new();
        for kind in ObjectKind::ALL {
            self.store
                .scan(&[kind.key_byte()], None, |key, rec| {
                    objects.push((key.to_vec(), rec.value.to_vec()));
                    true
                })
                .await?;
        }
        let mut claimed = 0;
        for (key, record) in &objects {
            let location = super::record::Record::decode(record)
                .ok()
                .and_then(|r| Placement::of(r.metadata).ok())
                .and_then(|p| self.files.normalise(&p.location).ok());
            let Some(location) = location else { continue };
            let mut batch = vec![Write::put(keys::location(&a, keys::LOCATION, &location), Expect::Absent, key)];
            for outer in ancestors(self.files.root(), &location) {
                batch.push(Write::put(keys::location(&a, keys::BENEATH, outer), Expect::Any, b""));
            }
            match self.store.apply(&batch).await {
                Ok(()) => claimed += 1,
                Err(StoreError::Conflict { .. }) => {
                    // Claimed by an earlier, interrupted run, or shared with another object.
                    let owner = self.store.get(batch[0].key).await?;
                    if !owner.is_some_and(|o| o.value.as_ref() == key.as_slice()) {
                        tracing::warn!(location, "a table or view shares its location with another; not claimed");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.store.apply(&[Write::put(marker, Expect::Absent, b"")]).await?;
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    use bumpalo::Bump;

    use super::super::record::RecordBuilder;
    use super::super::test_support::{json, with_catalog, SCHEMA};
    use super::super::Seal;
    use super::{ObjectKind, INDEXED};
    use crate::store::{keys, Expect, Store, Write};

    /// Every location claim: (location, owner key).
    async fn claims(c: &super::Catalog<impl Store, impl crate::fileio::FileIo>) -> Vec<(String, Vec<u8>)> {
        let mut found = Vec::new();
        c.store
            .scan(&[keys::LOCATION], None, |k, v| {
                found.push((String::from_utf8(k[1..].to_vec()).unwrap(), v.value.to_vec()));
                true
            })
            .await
            .unwrap();
        found
    }

    #[test]
    fn overlap_is_equal_or_nested_on_segment_boundaries() {
        assert!(super::overlap("file:///w/a", "file:///w/a"));
        assert!(super::overlap("file:///w/a", "file:///w/a/b"));
        assert!(super::overlap("file:///w/a/b", "file:///w/a"));
        assert!(!super::overlap("file:///w/a", "file:///w/ab"));
        assert!(!super::overlap("file:///w/a/b", "file:///w/a/c"));
    }

    #[test]
    fn objects_from_before_the_index_are_claimed_once_and_overlaps_stay_unclaimed() {
        with_catalog(async |c, root| {
            let a = Bump::new();
            let mut out = Vec::new();
            let body = format!(r#"{{"name":"t","schema":{SCHEMA}}}"#);
            c.create_table(&a, &["db"], body.as_bytes(), &mut out, &Seal::none()).await.unwrap();
            let location = json(&out)["metadata"]["location"].as_str().unwrap().to_string();
            let t_key = ObjectKind::Table.key(&a, &["db"], "t");
            assert_eq!(claims(&c).await, [(location.clone(), t_key.to_vec())]);

            // The store as an older server left it: no claims, no marker, and
            // another table stored with the same location as a bare path.
            let marker = keys::location(&a, keys::MIGRATION, INDEXED);
            let mut batch = vec![Write::delete(marker, Expect::Any)];
            let claimed = claims(&c).await;
            batch.extend(
                claimed.iter().map(|(l, _)| Write::delete(keys::location(&a, keys::LOCATION, l), Expect::Present)),
            );
            let legacy = format!(r#"{{"location":"{}/"}}"#, location.strip_prefix("file://").unwrap());
            let mut record = RecordBuilder::with_capacity(0);
            for field in [&b"/elsewhere/00000-x.metadata.json"[..], legacy.as_bytes(), b""] {
                record.bytes(field);
            }
            let record = record.finish();
            let legacy_key = ObjectKind::Table.key(&a, &["db"], "u-legacy");
            batch.push(Write::put(legacy_key, Expect::Absent, &record));
            c.store.apply(&batch).await.unwrap();
            assert!(claims(&c).await.is_empty());

            assert_eq!(c.index_locations().await.unwrap(), 1);
            assert_eq!(claims(&c).await, [(location.clone(), t_key.to_vec())]);
            assert_eq!(c.index_locations().await.unwrap(), 0, "the migration runs once");

            // Purging the unclaimed one leaves the claimed table's files.
            c.drop_table(&a, &["db"], "u-legacy", "purgeRequested=true", &Seal::none()).await.unwrap();
            let dir = root.join("db").join(location.rsplit('/').next().unwrap());
            assert!(dir.join("metadata").is_dir());
            c.load_table(&a, &["db"], "t", "", None, false, &mut Vec::new()).await.unwrap();
            assert_eq!(claims(&c).await, [(location.clone(), t_key.to_vec())]);
            c.drop_table(&a, &["db"], "t", "purgeRequested=true", &Seal::none()).await.unwrap();
            assert!(!dir.exists() && claims(&c).await.is_empty());
        });
    }

    #[test]
    fn of_two_nested_claims_read_at_once_the_second_applied_conflicts() {
        with_catalog(async |c, root| {
            let a = Bump::new();
            let outer = format!("file://{}/db/x", root.display());
            let inner = format!("{outer}/y/z");
            let (p, q) = (ObjectKind::Table.key(&a, &["db"], "p"), ObjectKind::Table.key(&a, &["db"], "q"));
            for (first, second) in [((p, &outer), (q, &inner)), ((q, &inner), (p, &outer))] {
                let one = c.claim_location(&a, first.0, first.1, None).await.unwrap();
                let two = c.claim_location(&a, second.0, second.1, None).await.unwrap();
                c.store.apply(&one).await.unwrap();
                assert!(matches!(c.store.apply(&two).await, Err(crate::store::StoreError::Conflict { .. })));
                // And read again, the second is refused outright.
                assert!(c.claim_location(&a, second.0, second.1, None).await.is_err());
                c.store.apply(&c.drop_claim(&a, first.0, Some(first.1), false).await.unwrap()).await.unwrap();
            }
            assert!(claims(&c).await.is_empty());
        });
    }

    #[test]
    fn a_purge_holds_its_location_until_it_ends_even_across_a_stop() {
        with_catalog(async |c, _| {
            let a = Bump::new();
            let mut out = Vec::new();
            let body = format!(r#"{{"name":"t","schema":{SCHEMA}}}"#);
            c.create_table(&a, &["db"], body.as_bytes(), &mut out, &Seal::none()).await.unwrap();
            let location = json(&out)["metadata"]["location"].as_str().unwrap().to_string();
            let key = ObjectKind::Table.key(&a, &["db"], "t");
            let other = ObjectKind::Table.key(&a, &["db"], "u");

            // The drop's batch of a purge, then a stop before the purge ended.
            let mut batch = vec![Write::delete(key, Expect::Present)];
            batch.extend(c.drop_claim(&a, key, Some(&location), true).await.unwrap());
            c.store.apply(&batch).await.unwrap();
            let marker = keys::location(&a, keys::PURGING, &location);
            assert_eq!(claims(&c).await, [(location.clone(), marker.to_vec())]);
            for inside in [location.clone(), format!("{location}/x")] {
                assert!(c.claim_location(&a, other, &inside, None).await.unwrap_err().message.contains("overlaps"));
            }

            assert_eq!(c.end_interrupted_purges().await.unwrap(), 1);
            assert!(claims(&c).await.is_empty());
            assert!(c.store.get(marker).await.unwrap().is_none());
            assert_eq!(c.end_interrupted_purges().await.unwrap(), 0);
            assert!(!c.claim_location(&a, other, &location, None).await.unwrap().is_empty());
        });
    }
}
