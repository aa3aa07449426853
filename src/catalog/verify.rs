//! Current metadata files checked against their records.
//!
//! A record holds its current file's bytes (the metadata JSON, or the gzip
//! file made from it: `Record::file_bytes`), so the store is the truth and the file can be checked byte for byte and
//! rewritten from it. Loads answer from the record and never touch files; a
//! file that was truncated, overwritten or deleted behind the catalog's back
//! is found by the verification pass (start-up, and `bingsan check`), or by
//! the size check a commit makes of its base, and restored from the record.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::kind::ObjectKind;
use super::record::Record;
use super::Catalog;
use crate::fileio::{FileIo, ReadError};
use crate::metrics::METADATA_FILES;
use crate::store::{keys, Store, StoreError};

/// How a current metadata file differs from its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    Missing,
    /// Present, but not the record's bytes (truncated, overwritten).
    Differs,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Damage::Missing => "missing",
            Damage::Differs => "differs from the catalog's record",
        })
    }
}

/// A damaged current metadata file, as the verification pass reports it.
#[derive(Debug)]
pub struct Finding {
    /// "table a.b.t" or "view a.v".
    pub object: String,
    pub location: String,
    pub damage: Damage,
    /// Rewritten from the record.
    pub repaired: bool,
}

/// What a verification pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub verified: u64,
    pub damaged: u64,
    pub repaired: u64,
}

/// Keys read from the store per scan, between file checks.
const SCAN_BATCH: usize = 64;

/// "table a.b.t" from a table or view key, for logs and reports.
fn describe(key: &[u8]) -> String {
    let kind = ObjectKind::of_key(key).unwrap_or(ObjectKind::Table).noun();
    let rest = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).replace(keys::PART_SEP as char, ".");
    format!("{kind} {}", rest.replacen(keys::NAME_SEP as char, ".", 1))
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// Compares the file at `location` with `expected`; `Err` when it
    /// cannot be read for another reason than being missing.
    async fn damage(&self, location: &str, expected: &[u8]) -> std::io::Result<Option<Damage>> {
        match self.files.read(location).await {
            Ok(bytes) if bytes == expected => Ok(None),
            Ok(_) => Ok(Some(Damage::Differs)),
            Err(ReadError::Missing) => Ok(Some(Damage::Missing)),
            // Something else took the file's place (a directory, an oversized file).
            Err(ReadError::NotARegularFile | ReadError::TooLarge) => Ok(Some(Damage::Differs)),
            Err(ReadError::Location(e)) => {
                Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))
            }
            Err(ReadError::Io(e)) => Err(e),
        }
    }

    /// Whether `version` of `key` is still the current record: a commit or
    /// drop since it was read makes its file history, which may have been
    /// deleted on purpose (metadata log expiry, purge).
    async fn still_current(&self, key: &[u8], version: u64) -> Result<bool, StoreError> {
        Ok(self.store.get(key).await?.is_some_and(|now| now.version == version))
    }

    /// Counts and logs a damaged current metadata file and, with `repair`,
    /// rewrites it from its record; returns whether it was restored.
    async fn found_damaged(&self, key: &[u8], record: &Record<'_>, damage: Damage, repair: bool) -> bool {
        METADATA_FILES.damaged.fetch_add(1, Relaxed);
        let object = describe(key);
        let location = record.metadata_location;
        tracing::error!(object, location, %damage, "current metadata file is damaged");
        if !repair {
            return false;
        }
        match self.files.restore(location, record.file_bytes()).await {
            Ok(()) => {
                METADATA_FILES.repaired.fetch_add(1, Relaxed);
                tracing::warn!(object, location, %damage, "restored the current metadata file from the catalog's record");
                true
            }
            Err(e) => {
                tracing::error!(object, location, %damage, error = %e, "cannot restore the current metadata file");
                false
            }
        }
    }

    /// Before a commit builds on `record` (of the object at `key`): a cheap
    /// check that its file still has the record's size, restoring it if
    /// not. The commit itself builds on the record, so it goes ahead either
    /// way; a same-size overwrite is left to the verification pass.
    pub(crate) async fn heal_base(&self, key: &[u8], version: u64, record: &Record<'_>) {
        let damage = match self.files.size(record.metadata_location).await {
            Ok(Some(size)) if size == record.file_bytes().len() as u64 => return,
            Ok(Some(_)) => Damage::Differs,
            Ok(None) => Damage::Missing,
            // Not a file this warehouse can stat (another scheme): nothing to check.
            Err(_) => return,
        };
        if self.still_current(key, version).await.unwrap_or(false) {
            self.found_damaged(key, record, damage, true).await;
        }
    }

    /// Checks the current metadata file of every table and view against its
    /// record, at most `per_sec` files a second (0: unpaced), until `stop`
    /// says so; with `repair`, rewrites each damaged file from its record
    /// if that record is still current. `report` hears of every damaged file.
    pub async fn verify_all(
        &self,
        repair: bool,
        per_sec: u32,
        stop: impl Fn() -> bool,
        mut report: impl FnMut(&Finding),
    ) -> Result<Tally, StoreError> {
        let pace = (per_sec > 0).then(|| Duration::from_secs(1) / per_sec);
        let mut tally = Tally::default();
        for kind in ObjectKind::ALL {
            let prefix = [kind.key_byte()];
            let mut after: Option<Vec<u8>> = None;
            loop {
                let mut batch: Vec<Vec<u8>> = Vec::with_capacity(SCAN_BATCH);
                self.store
                    .scan_keys(&prefix, after.as_deref(), |k| {
                        batch.push(k.to_vec());
                        batch.len() < SCAN_BATCH
                    })
                    .await?;
                for key in &batch {
                    if stop() {
                        return Ok(tally);
                    }
                    if let Some(finding) = self.verify_one(key, repair, &mut tally).await? {
                        report(&finding);
                    }
                    if let Some(pace) = pace {
                        glommio::timer::sleep(pace).await;
                    }
                }
                if batch.len() < SCAN_BATCH {
                    break;
                }
                after = batch.pop();
            }
        }
        Ok(tally)
    }

    async fn verify_one(&self, key: &[u8], repair: bool, tally: &mut Tally) -> Result<Option<Finding>, StoreError> {
        let Some(current) = self.store.get(key).await? else {
            return Ok(None); // Dropped meanwhile.
        };
        let Ok(record) = Record::decode(current.value.as_ref()) else {
            tracing::error!(object = describe(key), "stored record is corrupt");
            return Ok(None);
        };
        tally.verified += 1;
        METADATA_FILES.verified.fetch_add(1, Relaxed);
        let damage = match self.damage(record.metadata_location, record.file_bytes()).await {
            Ok(None) => return Ok(None),
            Ok(Some(damage)) => damage,
            Err(e) => {
                tracing::warn!(object = describe(key), location = record.metadata_location, error = %e, "cannot read the current metadata file");
                return Ok(None);
            }
        };
        if !self.still_current(key, current.version).await? {
            return Ok(None);
        }
        tally.damaged += 1;
        let repaired = self.found_damaged(key, &record, damage, repair).await;
        tally.repaired += u64::from(repaired);
        Ok(Some(Finding { object: describe(key), location: record.metadata_location.to_string(), damage, repaired }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    #[test]
    fn objects_are_described_by_kind_and_dotted_name() {
        let a = Bump::new();
        assert_eq!(describe(ObjectKind::Table.key(&a, &["a", "b"], "t")), "table a.b.t");
        assert_eq!(describe(ObjectKind::View.key(&a, &["a"], "v.w")), "view a.v.w");
    }
}
