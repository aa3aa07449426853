//! Table operations other than create and commit: load, list, exists,
//! drop, rename, register, metrics reports.

use bumpalo::Bump;
use serde::Deserialize;

use super::compressed::{complete, gunzip, is_gzip_name, FileForm, GunzipError};
use super::ident::{validate_namespace, validate_part, write_namespace};
use super::kind::ObjectKind;
use super::locations::Placement;
use super::namespaces::{no_such_namespace, parse_file, parse_json, write_failure};
use super::paging::{close_listing, Page};
use super::record::{Record, RecordBuilder};
use super::retry::Retry;
use super::seal::Seal;
use super::written::encoding_failure;
use super::{store_failure, Catalog};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::{FileIo, ReadError, MAX_METADATA_FILE};
use crate::http::percent::query_pairs;
use crate::json::write_str;
use crate::metadata::{TableIdentifier, TableMetadata};
use crate::store::{keys, Expect, Store, StoreError, Versioned, Write};

#[derive(Deserialize)]
struct RenameRequest {
    source: TableIdentifier,
    destination: TableIdentifier,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegisterTableRequest {
    name: String,
    metadata_location: String,
    #[serde(default)]
    overwrite: bool,
}

/// A quoted ETag value, kept inline: one per representation of one
/// metadata version (`"<hash>-a"`, `-r` for `snapshots=refs`, and `-ag`,
/// `-rg` for their gzip forms).
#[derive(Clone, Copy, Debug)]
pub struct ETag {
    bytes: [u8; 21],
    len: usize,
}

impl ETag {
    fn new(location: &str, refs_only: bool, encoding: Encoding) -> ETag {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in location.as_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 21];
        bytes[0] = b'"';
        for i in 0..16 {
            bytes[1 + i] = HEX[((h >> (60 - 4 * i)) & 15) as usize];
        }
        bytes[17] = b'-';
        bytes[18] = if refs_only { b'r' } else { b'a' };
        let mut len = 19;
        if encoding == Encoding::Gzip {
            bytes[len] = b'g';
            len += 1;
        }
        bytes[len] = b'"';
        ETag { bytes, len: len + 1 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether an `If-None-Match` value names this tag (or `*`).
    fn matched_by(&self, if_none_match: &[u8]) -> bool {
        if_none_match.split(|&b| b == b',').any(|t| t.trim_ascii() == self.as_bytes() || t.trim_ascii() == b"*")
    }
}

/// The content coding of a load answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Writes a `LoadTableResult` (or `CommitTableResponse` when `config` is false).
pub(crate) fn write_load_result(out: &mut Vec<u8>, location: Option<&str>, metadata: &[u8], config: bool) {
    load_result_head(out, location);
    out.extend_from_slice(metadata);
    load_result_tail(out, config);
}

/// [`write_load_result`] on a shard, for metadata of any size: a big
/// table's document is copied a slice at a time (`bulk`).
pub(crate) async fn write_load_result_sliced(out: &mut Vec<u8>, location: Option<&str>, metadata: &[u8], config: bool) {
    load_result_head(out, location);
    // Room for the tail too: growing a buffer of megabytes by its last byte
    // would copy it all at once, on the shard.
    out.reserve(metadata.len() + LOAD_RESULT_TAIL_MAX);
    crate::bulk::extend(out, metadata).await;
    load_result_tail(out, config);
}

/// The longest tail [`load_result_tail`] writes.
pub(crate) const LOAD_RESULT_TAIL_MAX: usize = ",\"config\":{}}".len();

pub(crate) fn load_result_head(out: &mut Vec<u8>, location: Option<&str>) {
    out.extend_from_slice(b"{\"metadata-location\":");
    match location {
        Some(l) => write_str(out, l),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"metadata\":");
}

pub(crate) fn load_result_tail(out: &mut Vec<u8>, config: bool) {
    if config {
        out.extend_from_slice(b",\"config\":{}");
    }
    out.push(b'}');
}

/// What a load answered: a body in an encoding, or "not modified" for a
/// matching ETag; either way with the ETag of the representation.
pub enum Loaded {
    Body(ETag, Encoding),
    NotModified(ETag),
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// The stored record of a table, or the right 404.
    pub(crate) async fn table_record(&self, a: &Bump, ns: &[&str], name: &str) -> ApiResult<Versioned<S::Value>> {
        self.object_record(a, ObjectKind::Table, ns, name).await
    }

    /// The stored record of a table or view (`kind`), or the right 404.
    pub(crate) async fn object_record(
        &self,
        a: &Bump,
        kind: ObjectKind,
        ns: &[&str],
        name: &str,
    ) -> ApiResult<Versioned<S::Value>> {
        validate_namespace(ns)?;
        validate_part(kind.name_label(), name)?;
        let key = kind.key(a, ns, name);
        match self.store.get(key).await.map_err(store_failure)? {
            Some(rec) => Ok(rec),
            None if self.namespace_record(a, ns).await?.is_none() => Err(no_such_namespace(ns)),
            None => Err(kind.not_found(ns, name)),
        }
    }

    /// `GET .../tables/{t}`: writes the body, the stored gzip form when the
    /// client accepts `gzip` and the table is big enough to have one.
    #[allow(clippy::too_many_arguments)]
    pub async fn load_table(
        &self,
        a: &Bump,
        ns: &[&str],
        name: &str,
        query: &str,
        if_none_match: Option<&[u8]>,
        gzip: bool,
        out: &mut Vec<u8>,
    ) -> ApiResult<Loaded> {
        let refs_only = match query_pairs(query).find(|(k, _)| *k == "snapshots").map(|(_, v)| v) {
            None | Some("all") => false,
            Some("refs") => true,
            Some(_) => return Err(ApiError::bad_request("snapshots must be 'all' or 'refs'")),
        };
        let rec = self.table_record(a, ns, name).await?;
        let record = Record::decode(rec.value.as_ref())?;
        let stored = if gzip { record.gzip_load_for(refs_only) } else { &[] };
        let encoding = if stored.is_empty() { Encoding::Identity } else { Encoding::Gzip };
        let tag = ETag::new(record.metadata_location, refs_only, encoding);
        if if_none_match.is_some_and(|inm| tag.matched_by(inm)) {
            return Ok(Loaded::NotModified(tag));
        }
        match encoding {
            Encoding::Gzip => crate::bulk::extend(out, stored).await,
            Encoding::Identity => {
                let metadata = record.metadata_for(refs_only);
                write_load_result_sliced(out, Some(record.metadata_location), metadata, true).await
            }
        }
        Ok(Loaded::Body(tag, encoding))
    }

    /// The location of a table (`GET .../credentials` vends for it).
    pub async fn table_location(&self, a: &Bump, ns: &[&str], name: &str) -> ApiResult<String> {
        let rec = self.table_record(a, ns, name).await?;
        Ok(Placement::of(Record::decode(rec.value.as_ref())?.metadata)?.location)
    }

    /// `HEAD .../tables/{t}`.
    pub async fn table_exists(&self, a: &Bump, ns: &[&str], name: &str) -> ApiResult<()> {
        self.table_record(a, ns, name).await.map(drop)
    }

    /// `GET .../namespaces/{ns}/tables` and `.../views`.
    pub async fn list_objects(
        &self,
        a: &Bump,
        kind: ObjectKind,
        ns: &[&str],
        query: &str,
        out: &mut Vec<u8>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        let page = Page::from_query(query, self.settings.default_page_size, self.settings.max_page_size, a)?;
        if self.namespace_record(a, ns).await?.is_none() {
            return Err(no_such_namespace(ns));
        }
        let prefix = kind.prefix(a, ns);
        out.extend_from_slice(b"{\"identifiers\":[");
        let last = self
            .scan_names(
                a,
                prefix,
                &page,
                |i, name, out: &mut Vec<u8>| {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"namespace\":");
                    write_namespace(out, ns);
                    out.extend_from_slice(b",\"name\":");
                    write_str(out, name);
                    out.push(b'}');
                },
                out,
            )
            .await?;
        close_listing(out, page.paged, last);
        Ok(())
    }

    /// `DELETE .../tables/{t}[?purgeRequested=true]`.
    pub async fn drop_table(&self, a: &Bump, ns: &[&str], name: &str, query: &str, seal: &Seal<'_>) -> ApiResult<()> {
        let purge = query_pairs(query).any(|(k, v)| k == "purgeRequested" && v.eq_ignore_ascii_case("true"));
        let rec = self.delete_object(a, ObjectKind::Table, ns, name, purge, seal).await?;
        if purge {
            self.purge(a, Record::decode(rec.value.as_ref())?).await?;
        }
        Ok(())
    }

    /// Deletes the files a dropped table owns: its metadata files (current
    /// and logged) and its location's subtree, but nothing outside the
    /// warehouse or in a location another live table or view claims. The
    /// table is gone either way; a failed purge leaves files, not corruption.
    async fn purge(&self, a: &Bump, record: Record<'_>) -> ApiResult<()> {
        let placement = Placement::of(record.metadata)?;
        let location = self.files.normalise(&placement.location).ok();
        // The claim the drop handed to the purge's marker, if it had one.
        let ours = location.as_deref().map_or(&[][..], |l| keys::location(a, keys::PURGING, l));
        let logged = placement.metadata_log.iter().map(|e| e.metadata_file.as_str());
        for file in logged.chain([record.metadata_location]) {
            if self.in_claimed_location(a, file, ours).await? {
                continue;
            }
            if let Err(e) = self.files.delete(file).await {
                tracing::warn!(error = %e, file, "purging a metadata file failed");
            }
        }
        let Some(location) = location else { return Ok(()) };
        if self.files.resolve(&location).is_ok() && !self.in_claimed_location(a, &location, ours).await? {
            let keep = self.claims_inside(a, &location).await?;
            if let Err(e) = self.files.delete_tree(&location, keep).await {
                tracing::warn!(error = %e, location, "purging table files failed");
            }
        }
        self.end_purge(a, &location).await.map_err(write_failure)
    }

    /// Deletes a table or view (`kind`) and its location claim (held for
    /// the `purge` to come, if any), sealing the 204 answer; returns the
    /// record it had.
    pub(crate) async fn delete_object(
        &self,
        a: &Bump,
        kind: ObjectKind,
        ns: &[&str],
        name: &str,
        purge: bool,
        seal: &Seal<'_>,
    ) -> ApiResult<Versioned<S::Value>> {
        let key = kind.key(a, ns, name);
        let mut retry = Retry::new();
        while retry.next().await {
            let rec = self.object_record(a, kind, ns, name).await?;
            let location = self.stored_location(Record::decode(rec.value.as_ref())?.metadata)?;
            let claim = self.drop_claim(a, key, location.as_deref(), purge).await?;
            let batch: Vec<Write<'_>> =
                [Write::delete(key, Expect::Version(rec.version))].into_iter().chain(claim).collect();
            match seal.apply(&self.store, &batch, 204, &[]).await {
                Ok(()) => return Ok(rec),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(write_failure(e)),
            }
        }
        Err(ApiError::new(ErrorKind::CommitFailed, format!("{} changed concurrently; retry the drop", kind.noun())))
    }

    /// `POST /v1/tables/rename` (and views, with `kind`).
    pub async fn rename(&self, a: &Bump, kind: ObjectKind, body: &[u8], seal: &Seal<'_>) -> ApiResult<()> {
        let req: RenameRequest = parse_json(body, "RenameTableRequest")?;
        let src_ns: Vec<&str> = req.source.namespace.iter().map(String::as_str).collect();
        let dst_ns: Vec<&str> = req.destination.namespace.iter().map(String::as_str).collect();
        validate_namespace(&src_ns)?;
        validate_namespace(&dst_ns)?;
        validate_part("name", &req.source.name)?;
        validate_part("name", &req.destination.name)?;
        let other = kind.other();
        let src = kind.key(a, &src_ns, &req.source.name);
        let dst = kind.key(a, &dst_ns, &req.destination.name);
        let dst_other = other.key(a, &dst_ns, &req.destination.name);
        let dst_ns_key = keys::namespace(a, &dst_ns);
        let mut retry = Retry::new();
        while retry.next().await {
            let rec = match self.store.get(src).await.map_err(store_failure)? {
                Some(r) => r,
                None => return Err(kind.not_found(&src_ns, &req.source.name)),
            };
            let ns_version = self.live_namespace_version(a, &dst_ns).await?;
            if src == dst {
                return Ok(());
            }
            // The location stays; its claim passes to the new name.
            let location = self.stored_location(Record::decode(rec.value.as_ref())?.metadata)?;
            let hand_over = self.hand_over_location(a, src, dst, location.as_deref()).await?;
            let batch: Vec<Write<'_>> = [
                Write::delete(src, Expect::Version(rec.version)),
                Write::put(dst, Expect::Absent, rec.value.as_ref()),
                Write::check(dst_other, Expect::Absent),
                Write::check(dst_ns_key, Expect::Version(ns_version)),
            ]
            .into_iter()
            .chain(hand_over)
            .collect();
            match seal.apply(&self.store, &batch, 204, &[]).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { index: 1 }) => {
                    return Err(kind.already_exists(&dst_ns, &req.destination.name));
                }
                Err(StoreError::Conflict { index: 2 }) => {
                    return Err(other.already_exists(&dst_ns, &req.destination.name));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(write_failure(e)),
            }
        }
        Err(ApiError::new(ErrorKind::CommitFailed, "rename raced with other changes; retry"))
    }

    /// `POST .../namespaces/{ns}/register`.
    pub async fn register_table(
        &self,
        a: &Bump,
        ns: &[&str],
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        let req: RegisterTableRequest = parse_json(body, "RegisterTableRequest")?;
        validate_part(ObjectKind::Table.name_label(), &req.name)?;
        let (metadata_location, bytes, file) = self.read_metadata_file(&req.metadata_location).await?;
        let md: TableMetadata = parse_file(&bytes, "table metadata")?;
        let location = self.resolve_location(&md.location)?;
        let mut record = RecordBuilder::with_capacity(2 * bytes.len() + metadata_location.len() + 13);
        record.bytes(metadata_location.as_bytes());
        record.bytes(&bytes);
        record.field(|out| write_refs_rendering(&md, out)).map_err(encoding_failure)?;
        let record = complete(record, file).await;
        write_load_result(out, Some(&metadata_location), &bytes, true);
        self.insert_object(a, ObjectKind::Table, ns, &req.name, &record, &location, req.overwrite, seal, out)
            .await
            .map_err(|r| r.into_api(write_failure))
    }

    /// A metadata file named by a client (register): its normalised
    /// location, its JSON (decompressed when its name says gzip) and what
    /// the file holds; only a regular file inside the warehouse. The 400s
    /// name the client's location and never what the server found there.
    pub(crate) async fn read_metadata_file(&self, location: &str) -> ApiResult<(String, Vec<u8>, FileForm)> {
        let refused = |why: &str| ApiError::bad_request(format!("cannot register {location}: {why}"));
        let resolved = self.files.resolve(location).map_err(|e| refused(&e.to_string()))?;
        let too_large = "larger than a metadata file may be";
        let bytes = match self.files.read(&resolved).await {
            Ok(bytes) => bytes,
            Err(ReadError::Location(e)) => return Err(refused(&e.to_string())),
            Err(ReadError::Missing) => return Err(refused("no such file in the warehouse")),
            Err(ReadError::NotARegularFile) => return Err(refused("not a regular file")),
            Err(ReadError::TooLarge) => return Err(refused(too_large)),
            Err(ReadError::Io(e)) => {
                tracing::warn!(error = %e, location, "reading a metadata file to register failed");
                return Err(refused("the file cannot be read"));
            }
        };
        if !is_gzip_name(&resolved) {
            return Ok((resolved, bytes, FileForm::Plain));
        }
        match gunzip(bytes.clone(), MAX_METADATA_FILE).await {
            Ok(json) => Ok((resolved, json, FileForm::AsRead(bytes))),
            Err(GunzipError::NotGzip) => Err(refused("named as gzip but not a valid gzip file")),
            Err(GunzipError::TooLarge) => Err(refused(too_large)),
        }
    }

    /// `POST .../tables/{t}/metrics`: the report is validated and counted;
    /// a local warehouse has nowhere further to send it.
    pub async fn report_metrics(&self, a: &Bump, ns: &[&str], name: &str, body: &[u8]) -> ApiResult<()> {
        parse_json::<serde::de::IgnoredAny>(body, "ReportMetricsRequest")?;
        self.table_exists(a, ns, name).await
    }
}

/// The `snapshots=refs` rendering, or empty when it equals the full one.
pub(crate) fn write_refs_rendering(md: &TableMetadata, out: &mut Vec<u8>) -> sonic_rs::Result<()> {
    let referenced = |id: i64| md.refs.values().any(|r| r.snapshot_id == id);
    if md.snapshots.iter().all(|s| referenced(s.snapshot_id)) {
        return Ok(());
    }
    sonic_rs::to_writer(out, &md.referenced_snapshots_only())
}
