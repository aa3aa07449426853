//! Creating tables and committing changes to them.
//!
//! A commit is optimistic: read the current record, apply the requirements
//! and updates, write the new metadata file durably, then compare-and-swap
//! the record. Losing the swap means another writer committed first: the
//! requirements are checked again against the new base and, if they still
//! hold, the commit is re-applied (bounded, with backoff), so a hot table
//! absorbs contention. Only a failed requirement reaches the client as 409,
//! and never when the outcome is unknown.

use bumpalo::Bump;

use super::compressed::{Codec, CODEC_PROPERTY};
use super::ident::{validate_namespace, validate_part};
use super::kind::ObjectKind;
use super::locations::{overlap, overlaps};
use super::namespaces::parse_json;
use super::record::{file_version, Record};
use super::retry::Retry;
use super::seal::Seal;
use super::sliced::{
    delete_after_commit, slice_here, slice_off_shard, SliceInput, Sliced, DELETE_AFTER_COMMIT, OFF_SHARD_BYTES,
};
use super::tables::{write_load_result, write_load_result_sliced, write_refs_rendering};
use super::written::{new_record_capacity, Written, COMMIT_GROWTH};
use super::{store_failure, Catalog};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::location::with_scheme;
use crate::fileio::FileIo;
use crate::metadata::{
    apply_commit, apply_create, commit_locations, new_table_metadata, quick_conflict, record_previous,
    CommitTableRequest, CommitTransactionRequest, CreateTableRequest, TableMetadata, TableRequirement,
};
use crate::store::{keys, Expect, Store, StoreError, Write};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A store failure after the metadata file was written: whether the swap
/// happened is unknown, so the client must not treat it as a failure.
fn unknown_outcome(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "commit outcome unknown");
    let cause = crate::disk::store_write_failed(&e);
    ApiError::new(ErrorKind::CommitStateUnknown, format!("commit outcome unknown: {}", cause.message))
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// Serializes `md` and writes it durably as metadata file `version`;
    /// `capacity` guesses the size of its record.
    pub(crate) async fn write_metadata(&self, md: &TableMetadata, version: u64, capacity: usize) -> ApiResult<Written> {
        let codec = Codec::of(md.properties.get(CODEC_PROPERTY).map(String::as_str), self.settings.metadata_codec)?;
        let metadata = |out: &mut Vec<u8>| sonic_rs::to_writer(out, md);
        let refs = |out: &mut Vec<u8>| write_refs_rendering(md, out);
        self.write_metadata_json(&md.location, version, codec, capacity, metadata, refs).await
    }

    /// Deletes a metadata file nobody will reference (a lost race).
    async fn discard(&self, location: &str) {
        if let Err(e) = self.files.delete(location).await {
            tracing::warn!(error = %e, location, "could not delete an unreferenced metadata file");
        }
    }

    /// `POST .../namespaces/{ns}/tables`.
    pub async fn create_table(
        &self,
        a: &Bump,
        ns: &[&str],
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        let req: CreateTableRequest = parse_json(body, "CreateTableRequest")?;
        validate_part(ObjectKind::Table.name_label(), &req.name)?;
        self.live_namespace_version(a, ns).await?;
        self.ensure_name_free(a, ObjectKind::Table, ns, &req.name).await?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let location = self.object_location(req.location.as_deref(), ns, &req.name, &uuid)?;
        let md = new_table_metadata(&req, &location, &uuid, now_ms())?;
        if req.stage_create {
            // Nothing is claimed yet; an overlap found now would fail the create later.
            self.claim_location(a, ObjectKind::Table.key(a, ns, &req.name), &location, None).await?;
            let json = sonic_rs::to_vec(&md).map_err(|e| ApiError::internal(format!("serializing metadata: {e}")))?;
            write_load_result(out, None, &json, true);
            return Ok(());
        }
        let written = self.write_metadata(&md, 0, new_record_capacity(body)).await?;
        write_load_result(out, Some(written.location()), written.metadata(), true);
        self.insert_new(a, ObjectKind::Table, ns, &req.name, &written, &md.location, seal, out).await
    }

    /// Makes a freshly written table or view (`kind`) at `location` current,
    /// atomically with the checks that its namespace is unchanged, no table
    /// or view took the name and no other one overlaps the location, and
    /// with the `answer` under `seal`; the file is deleted when that is
    /// refused.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_new(
        &self,
        a: &Bump,
        kind: ObjectKind,
        ns: &[&str],
        name: &str,
        written: &Written,
        location: &str,
        seal: &Seal<'_>,
        answer: &[u8],
    ) -> ApiResult<()> {
        match self.insert_object(a, kind, ns, name, written.record(), location, false, seal, answer).await {
            Ok(()) => Ok(()),
            Err(Refused::Client(e)) => {
                self.discard(written.location()).await;
                Err(e)
            }
            Err(Refused::Unknown(e)) => Err(unknown_outcome(e)),
        }
    }

    /// Puts the record of a table or view (`kind`) at `location` (resolved),
    /// new or `overwrite`-ing the object of that name, atomically with the
    /// checks that no object of the other kind has the name, that the
    /// namespace is live and unchanged since read, and the location claim
    /// (re-read and retried when any of them changed), and with the `answer`
    /// (status 200) under `seal`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_object(
        &self,
        a: &Bump,
        kind: ObjectKind,
        ns: &[&str],
        name: &str,
        record: &[u8],
        location: &str,
        overwrite: bool,
        seal: &Seal<'_>,
        answer: &[u8],
    ) -> Result<(), Refused> {
        let key = kind.key(a, ns, name);
        let other_key = kind.other().key(a, ns, name);
        let ns_key = keys::namespace(a, ns);
        let mut ns_version = self.live_namespace_version(a, ns).await.map_err(Refused::Client)?;
        let mut retry = Retry::new();
        while retry.next().await {
            // A taken name is the answer before any location question.
            if self.store.get(other_key).await.map_err(|e| Refused::Client(store_failure(e)))?.is_some() {
                return Err(Refused::Client(kind.other().already_exists(ns, name)));
            }
            let (expect, old) = match self.store.get(key).await.map_err(|e| Refused::Client(store_failure(e)))? {
                Some(_) if !overwrite => return Err(Refused::Client(kind.already_exists(ns, name))),
                Some(current) => {
                    let metadata = Record::decode(current.value.as_ref()).map_err(Refused::Client)?.metadata;
                    (Expect::Version(current.version), self.stored_location(metadata).map_err(Refused::Client)?)
                }
                None => (Expect::Absent, None),
            };
            let claim = self.claim_location(a, key, location, old.as_deref()).await.map_err(Refused::Client)?;
            let mut batch = vec![
                Write::put(key, expect, record),
                Write::check(other_key, Expect::Absent),
                Write::check(ns_key, Expect::Version(ns_version)),
            ];
            batch.extend(claim);
            match seal.apply(&self.store, &batch, 200, answer).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { index: 0 }) if !overwrite => {
                    return Err(Refused::Client(kind.already_exists(ns, name)))
                }
                Err(StoreError::Conflict { index: 1 }) => {
                    return Err(Refused::Client(kind.other().already_exists(ns, name)))
                }
                // The namespace changed (properties) or is being dropped.
                Err(StoreError::Conflict { index: 2 }) => {
                    ns_version = self.live_namespace_version(a, ns).await.map_err(Refused::Client)?
                }
                // The overwritten record or a location claim moved: read again.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(Refused::Unknown(e)),
            }
        }
        Err(Refused::Client(ApiError::new(
            ErrorKind::CommitFailed,
            "the namespace or the location changed concurrently; retry",
        )))
    }

    /// A 409 when a table or view already has the name of a new `kind`
    /// object (checked again atomically when it is inserted; this spares
    /// writing a metadata file for nothing).
    pub(crate) async fn ensure_name_free(&self, a: &Bump, kind: ObjectKind, ns: &[&str], name: &str) -> ApiResult<()> {
        for k in [kind, kind.other()] {
            if self.store.get(k.key(a, ns, name)).await.map_err(store_failure)?.is_some() {
                return Err(k.already_exists(ns, name));
            }
        }
        Ok(())
    }

    /// The location of a new table or view: the requested one (resolved;
    /// 400 when the warehouse refuses it), else the default, made unique by
    /// the object's `uuid`.
    pub(crate) fn object_location(
        &self,
        requested: Option<&str>,
        ns: &[&str],
        name: &str,
        uuid: &str,
    ) -> ApiResult<String> {
        match requested {
            Some(l) if !l.is_empty() => self.resolve_location(l),
            _ => Ok(self.files.default_location(ns, name, uuid)),
        }
    }

    /// `POST .../tables/{t}`: the commit engine.
    pub async fn commit_table(
        &self,
        a: &Bump,
        ns: &[&str],
        name: &str,
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        validate_part(ObjectKind::Table.name_label(), name)?;
        let req: CommitTableRequest = parse_json(body, "CommitTableRequest")?;
        let prepare = async || self.prepare(a, ns, name, &req).await;
        let committed = self.commit_with_retries(ns, name, prepare, false, out, seal).await?;
        if !committed {
            return self.create_by_commit(a, ns, name, &req, out, seal).await;
        }
        Ok(())
    }

    /// The optimistic loop of a table or view commit: `prepare` on the
    /// current base, swap, and on a lost race start over on the new base.
    /// Writes the result (a `LoadTableResult`/`LoadViewResult` when `config`,
    /// else a `CommitTableResponse`), sealed with the swap; false when
    /// `prepare` asked for a create (nothing written).
    pub(crate) async fn commit_with_retries<'k>(
        &self,
        ns: &[&str],
        name: &str,
        mut prepare: impl AsyncFnMut() -> ApiResult<Prepared<'k>>,
        config: bool,
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<bool> {
        let mut retry = Retry::new();
        while retry.next().await {
            out.clear();
            let prepared = match prepare().await? {
                Prepared::Create => return Ok(false),
                Prepared::Unchanged { location, metadata } => {
                    write_load_result(out, Some(&location), &metadata, config);
                    return Ok(true);
                }
                Prepared::Change(change) => change,
            };
            let (location, metadata) = (prepared.written.location(), prepared.written.metadata());
            write_load_result_sliced(out, Some(location), metadata, config).await;
            match seal.apply(&self.store, &prepared.writes(), 200, out).await {
                Ok(()) => {
                    self.after_commit(&prepared).await;
                    return Ok(true);
                }
                Err(StoreError::Conflict { .. }) => {
                    // Someone committed first: our file is garbage; retry on the new base.
                    self.discard(prepared.written.location()).await;
                }
                Err(e) => return Err(unknown_outcome(e)),
            }
        }
        Err(ApiError::new(
            ErrorKind::CommitFailed,
            format!("too much contention committing to {}.{name}; retry", ns.join(".")),
        ))
    }

    /// `POST /v1/transactions/commit`: every table moves or none does. All
    /// new metadata files are written first; one atomic store batch then
    /// swaps every pointer, so a crash leaves all tables old or all new.
    pub async fn commit_transaction(&self, a: &Bump, body: &[u8], seal: &Seal<'_>) -> ApiResult<()> {
        let req: CommitTransactionRequest = parse_json(body, "CommitTransactionRequest")?;
        let mut idents = Vec::with_capacity(req.table_changes.len());
        for change in &req.table_changes {
            let id = change
                .identifier
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("every table change in a transaction needs an identifier"))?;
            let ns: Vec<&str> = id.namespace.iter().map(String::as_str).collect();
            validate_namespace(&ns)?;
            validate_part(ObjectKind::Table.name_label(), &id.name)?;
            if idents.iter().any(|(n, t): &(Vec<&str>, &str)| *n == ns && *t == id.name) {
                return Err(ApiError::bad_request(format!(
                    "table {}.{} appears twice in the transaction",
                    ns.join("."),
                    id.name
                )));
            }
            idents.push((ns, id.name.as_str()));
        }
        let mut retry = Retry::new();
        while retry.next().await {
            let mut changes = Vec::with_capacity(idents.len());
            let mut failure = None;
            for ((ns, name), change) in idents.iter().zip(&req.table_changes) {
                match self.prepare(a, ns, name, change).await {
                    Ok(Prepared::Change(c)) => changes.push(c),
                    Ok(Prepared::Unchanged { .. }) => {}
                    Ok(Prepared::Create) => {
                        failure = Some(ApiError::bad_request("creating tables inside a transaction is not supported"));
                        break;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // Each claim was checked against the store alone: two tables of
            // this transaction moving to nested locations would conflict
            // with each other on every attempt.
            failure = failure.or_else(|| nested_moves(&changes));
            if let Some(e) = failure {
                for c in &changes {
                    self.discard(c.written.location()).await;
                }
                return Err(e);
            }
            let batch: Vec<Write<'_>> = changes.iter().flat_map(Change::writes).collect();
            match seal.apply(&self.store, &batch, 204, &[]).await {
                Ok(()) => {
                    for c in &changes {
                        self.after_commit(c).await;
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => {
                    for c in &changes {
                        self.discard(c.written.location()).await;
                    }
                }
                Err(e) => return Err(unknown_outcome(e)),
            }
        }
        Err(ApiError::new(ErrorKind::CommitFailed, "too much contention committing the transaction; retry"))
    }

    /// Reads a table, applies a commit to it, and writes the new metadata
    /// file, without making it current.
    async fn prepare<'k>(
        &self,
        a: &'k Bump,
        ns: &[&str],
        name: &str,
        req: &CommitTableRequest,
    ) -> ApiResult<Prepared<'k>> {
        let key = ObjectKind::Table.key(a, ns, name);
        let Some(current) = self.store.get(key).await.map_err(store_failure)? else {
            if req.requirements.iter().any(|r| matches!(r, TableRequirement::AssertCreate)) {
                return Ok(Prepared::Create);
            }
            if self.namespace_record(a, ns).await?.is_none() {
                return Err(super::namespaces::no_such_namespace(ns));
            }
            return Err(ObjectKind::Table.not_found(ns, name));
        };
        let record = Record::decode(current.value.as_ref())?;
        let capacity = current.value.as_ref().len() + COMMIT_GROWTH;
        // Tables stored before locations carried a scheme get it with their next version.
        let previous = with_scheme(record.metadata_location);
        let previous = previous.as_deref().unwrap_or(record.metadata_location);
        let Some((base_location, target)) = commit_locations(record.metadata, &req.updates) else {
            return self.prepare_by_model(a, key, current.version, &record, req, capacity).await;
        };
        let resolved = self.resolve_location(&target);
        let input = SliceInput {
            doc: record.metadata,
            previous,
            requirements: &req.requirements,
            updates: &req.updates,
            now_ms: now_ms(),
            resolved: &resolved,
            version: file_version(record.metadata_location) + 1,
            default_codec: self.settings.metadata_codec,
            capacity,
            rewrite: |file| with_scheme(file).is_some(),
            gzip_load: record.gzip_load,
            gzip_table: record.gzip_table,
        };
        let sliced = if record.metadata.len() >= OFF_SHARD_BYTES {
            slice_off_shard(&input).await?
        } else {
            slice_here(&input, a).await?
        };
        let (record_bytes, expired, delete_expired) = match sliced {
            Sliced::Model => return self.prepare_by_model(a, key, current.version, &record, req, capacity).await,
            Sliced::Unchanged => {
                self.heal_base(key, current.version, &record).await;
                return Ok(Prepared::Unchanged {
                    location: record.metadata_location.to_string(),
                    metadata: record.metadata.to_vec(),
                });
            }
            Sliced::Ready { record, expired, delete_expired } => (record, expired, delete_expired),
        };
        self.heal_base(key, current.version, &record).await;
        let location = resolved?;
        // Unmoved, the base location normalises to `location`: the claim stays.
        let claim = if target == base_location {
            Vec::new()
        } else {
            let old = self.files.normalise(&base_location).ok();
            self.claim_location(a, key, &location, old.as_deref()).await?
        };
        let written = self.write_record(record_bytes).await?;
        let moved_to = (!claim.is_empty()).then_some(location);
        Ok(Prepared::Change(Change {
            key,
            version: current.version,
            written,
            claim,
            moved_to,
            expired,
            delete_expired,
        }))
    }

    /// [`Self::prepare`] through the owned model: the base parsed, the
    /// updates applied to it, the new version serialized whole.
    async fn prepare_by_model<'k>(
        &self,
        a: &'k Bump,
        key: &'k [u8],
        version: u64,
        record: &Record<'_>,
        req: &CommitTableRequest,
        capacity: usize,
    ) -> ApiResult<Prepared<'k>> {
        // A writer that lost a race learns it without a parse of the table.
        if let Some(conflict) = quick_conflict(&req.requirements, record.metadata) {
            return Err(conflict.into());
        }
        self.heal_base(key, version, record).await;
        let base: TableMetadata = parse_json(record.metadata, "stored metadata")?;
        let base_updated_ms = base.last_updated_ms;
        let base_location = base.location.clone();
        // The same bytes parsed a moment ago: they parse again.
        let base_again = || parse_json(record.metadata, "stored metadata").expect("stored metadata parsed before");
        let outcome = apply_commit(base, base_again, &req.requirements, &req.updates, now_ms())?;
        if !outcome.changed {
            return Ok(Prepared::Unchanged {
                location: record.metadata_location.to_string(),
                metadata: record.metadata.to_vec(),
            });
        }
        let mut md = outcome.metadata;
        let claim = self.relocate(a, key, &base_location, &mut md.location).await?;
        // Tables stored before locations carried a scheme get it with their next version.
        let previous = with_scheme(record.metadata_location);
        let expired =
            record_previous(&mut md, previous.as_deref().unwrap_or(record.metadata_location), base_updated_ms);
        for entry in &mut md.metadata_log {
            if let Some(uri) = with_scheme(&entry.metadata_file) {
                entry.metadata_file = uri;
            }
        }
        let written = self.write_metadata(&md, file_version(record.metadata_location) + 1, capacity).await?;
        let delete_expired = delete_after_commit(md.properties.get(DELETE_AFTER_COMMIT).map(String::as_str));
        let moved_to = (!claim.is_empty()).then(|| md.location.clone());
        Ok(Prepared::Change(Change { key, version, written, claim, moved_to, expired, delete_expired }))
    }

    /// Resolves the `location` a commit leaves an object with (400 outside
    /// the warehouse; a bare path stored before locations carried a scheme
    /// becomes its URI), and the writes that move the object's location
    /// claim there from its `base` location.
    pub(crate) async fn relocate<'k>(
        &self,
        a: &'k Bump,
        key: &'k [u8],
        base: &str,
        location: &mut String,
    ) -> ApiResult<Vec<Write<'k>>> {
        *location = self.resolve_location(location)?;
        let old = self.files.normalise(base).ok();
        self.claim_location(a, key, location, old.as_deref()).await
    }

    /// Deletes metadata files that fell off the log, when the table asks.
    async fn after_commit(&self, change: &Change<'_>) {
        if change.delete_expired {
            for old in &change.expired {
                self.discard(old).await;
            }
        }
    }

    /// A commit with `assert-create` on a table that does not exist yet
    /// (the second half of a staged create).
    async fn create_by_commit(
        &self,
        a: &Bump,
        ns: &[&str],
        name: &str,
        req: &CommitTableRequest,
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        self.live_namespace_version(a, ns).await?;
        let mut md = apply_create(&req.requirements, &req.updates, now_ms())?.metadata;
        md.location = self.object_location(Some(&md.location), ns, name, &md.table_uuid)?;
        let written = self.write_metadata(&md, 0, COMMIT_GROWTH).await?;
        write_load_result(out, Some(written.location()), written.metadata(), false);
        self.insert_new(a, ObjectKind::Table, ns, name, &written, &md.location, seal, out).await.map_err(|e| {
            match e.kind {
                // Someone created it meanwhile: the assert-create requirement failed.
                ErrorKind::AlreadyExists => ApiError::new(
                    ErrorKind::CommitFailed,
                    format!("Requirement failed: table {name} was created concurrently"),
                ),
                _ => e,
            }
        })
    }
}

/// Why a new object's record was not put.
pub(crate) enum Refused {
    /// An answer for the client (exists, no namespace, contention).
    Client(ApiError),
    /// The store failed: whether the put happened is unknown.
    Unknown(StoreError),
}

impl Refused {
    /// The client's answer, mapping an unknown outcome with `unknown`.
    pub fn into_api(self, unknown: fn(StoreError) -> ApiError) -> ApiError {
        match self {
            Refused::Client(e) => e,
            Refused::Unknown(e) => unknown(e),
        }
    }
}

/// What a commit to one table (or view) will do.
pub(crate) enum Prepared<'k> {
    /// The table does not exist and the commit asserts its creation.
    Create,
    /// The updates change nothing: answer with the current metadata.
    Unchanged {
        location: String,
        metadata: Vec<u8>,
    },
    Change(Change<'k>),
}

/// A prepared change: the new metadata file is written; swapping the
/// record from `version` makes it current.
pub(crate) struct Change<'k> {
    pub key: &'k [u8],
    pub version: u64,
    pub written: Written,
    /// Location claim writes when the commit moves the object.
    pub claim: Vec<Write<'k>>,
    /// Where the commit moves the object (normalised), if it does.
    pub moved_to: Option<String>,
    /// Metadata files that fell off the log, deleted after the swap when
    /// `delete_expired`.
    pub expired: Vec<String>,
    pub delete_expired: bool,
}

impl Change<'_> {
    /// The swap of the record, and the claim of its new location.
    fn writes(&self) -> Vec<Write<'_>> {
        let swap = Write::put(self.key, Expect::Version(self.version), self.written.record());
        std::iter::once(swap).chain(self.claim.iter().copied()).collect()
    }
}

/// The 400 for two changes that move their tables to overlapping locations.
fn nested_moves(changes: &[Change<'_>]) -> Option<ApiError> {
    let moved: Vec<&str> = changes.iter().filter_map(|c| c.moved_to.as_deref()).collect();
    moved.iter().enumerate().find_map(|(i, x)| moved[i + 1..].iter().any(|y| overlap(x, y)).then(|| overlaps(x)))
}
