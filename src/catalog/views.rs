//! View operations: create, load, exists, replace, drop, register.
//!
//! Views are stored like tables (`record.rs`, with no `snapshots=refs`
//! rendering) under `ObjectKind::View`, and share the table machinery: metadata
//! files are written durably before the pointer moves, names are checked
//! against tables and views atomically, and a replace is an optimistic
//! compare-and-swap retried on the new base. Listing and rename are the
//! shared `list_objects` and `rename`.

use bumpalo::Bump;
use serde::Deserialize;

use super::commit::{now_ms, Change, Prepared};
use super::compressed::{complete, Codec, CODEC_PROPERTY};
use super::ident::{validate_namespace, validate_part};
use super::kind::ObjectKind;
use super::namespaces::{parse_file, parse_json, write_failure};
use super::record::{file_version, Record, RecordBuilder};
use super::seal::Seal;
use super::tables::{write_load_result, Encoding};
use super::written::{new_record_capacity, Written, COMMIT_GROWTH};
use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::fileio::FileIo;
use crate::metadata::{apply_view_commit, new_view_metadata, CommitViewRequest, CreateViewRequest, ViewMetadata};
use crate::store::Store;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegisterViewRequest {
    name: String,
    metadata_location: String,
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    /// Serializes view metadata and writes it durably as metadata file
    /// `version`; `capacity` guesses the size of its record.
    async fn write_view_metadata(&self, md: &ViewMetadata, version: u64, capacity: usize) -> ApiResult<Written> {
        let codec = Codec::of(md.properties.get(CODEC_PROPERTY).map(String::as_str), self.settings.metadata_codec)?;
        let metadata = |out: &mut Vec<u8>| sonic_rs::to_writer(out, md);
        self.write_metadata_json(&md.location, version, codec, capacity, metadata, |_| Ok(())).await
    }

    /// `POST .../namespaces/{ns}/views`: answers a `LoadViewResult`.
    pub async fn create_view(
        &self,
        a: &Bump,
        ns: &[&str],
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        let req: CreateViewRequest = parse_json(body, "CreateViewRequest")?;
        validate_part(ObjectKind::View.name_label(), &req.name)?;
        self.live_namespace_version(a, ns).await?;
        self.ensure_name_free(a, ObjectKind::View, ns, &req.name).await?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let location = self.object_location(req.location.as_deref(), ns, &req.name, &uuid)?;
        let md = new_view_metadata(&req, &location, &uuid, now_ms())?;
        let written = self.write_view_metadata(&md, 0, new_record_capacity(body)).await?;
        write_load_result(out, Some(written.location()), written.metadata(), true);
        self.insert_new(a, ObjectKind::View, ns, &req.name, &written, &md.location, seal, out).await
    }

    /// `GET .../views/{v}`: the stored bytes, unparsed; the stored gzip
    /// form when the client accepts `gzip` and the view has one.
    pub async fn load_view(
        &self,
        a: &Bump,
        ns: &[&str],
        name: &str,
        gzip: bool,
        out: &mut Vec<u8>,
    ) -> ApiResult<Encoding> {
        let rec = self.object_record(a, ObjectKind::View, ns, name).await?;
        let record = Record::decode(rec.value.as_ref())?;
        if gzip && !record.gzip_load.is_empty() {
            out.extend_from_slice(record.gzip_load);
            return Ok(Encoding::Gzip);
        }
        write_load_result(out, Some(record.metadata_location), record.metadata, true);
        Ok(Encoding::Identity)
    }

    /// `HEAD .../views/{v}`.
    pub async fn view_exists(&self, a: &Bump, ns: &[&str], name: &str) -> ApiResult<()> {
        self.object_record(a, ObjectKind::View, ns, name).await.map(drop)
    }

    /// `POST .../views/{v}`: requirements and updates, swapped in optimistically.
    pub async fn replace_view(
        &self,
        a: &Bump,
        ns: &[&str],
        name: &str,
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        validate_part(ObjectKind::View.name_label(), name)?;
        let req: CommitViewRequest = parse_json(body, "CommitViewRequest")?;
        let prepare = async || self.prepare_view(a, ns, name, &req).await;
        // A view commit never asks for a create, so this always answered.
        self.commit_with_retries(ns, name, prepare, true, out, seal).await.map(drop)
    }

    /// Reads a view, applies a commit to it, and writes the new metadata
    /// file, without making it current.
    async fn prepare_view<'k>(
        &self,
        a: &'k Bump,
        ns: &[&str],
        name: &str,
        req: &CommitViewRequest,
    ) -> ApiResult<Prepared<'k>> {
        let current = self.object_record(a, ObjectKind::View, ns, name).await?;
        let record = Record::decode(current.value.as_ref())?;
        let key = ObjectKind::View.key(a, ns, name);
        self.heal_base(key, current.version, &record).await;
        let base: ViewMetadata = parse_json(record.metadata, "stored view metadata")?;
        let mut outcome = apply_view_commit(&base, &req.requirements, &req.updates, now_ms())?;
        if !outcome.changed {
            return Ok(Prepared::Unchanged {
                location: record.metadata_location.to_string(),
                metadata: record.metadata.to_vec(),
            });
        }
        let claim = self.relocate(a, key, &base.location, &mut outcome.metadata.location).await?;
        let capacity = current.value.as_ref().len() + COMMIT_GROWTH;
        let version = file_version(record.metadata_location) + 1;
        let written = self.write_view_metadata(&outcome.metadata, version, capacity).await?;
        Ok(Prepared::Change(Change {
            key,
            version: current.version,
            written,
            moved_to: (!claim.is_empty()).then(|| outcome.metadata.location.clone()),
            claim,
            expired: Vec::new(),
            delete_expired: false,
        }))
    }

    /// `DELETE .../views/{v}`: the metadata files stay.
    pub async fn drop_view(&self, a: &Bump, ns: &[&str], name: &str, seal: &Seal<'_>) -> ApiResult<()> {
        self.delete_object(a, ObjectKind::View, ns, name, false, seal).await.map(drop)
    }

    /// `POST .../namespaces/{ns}/register-view`: answers a `LoadViewResult`.
    pub async fn register_view(
        &self,
        a: &Bump,
        ns: &[&str],
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        let req: RegisterViewRequest = parse_json(body, "RegisterViewRequest")?;
        validate_part(ObjectKind::View.name_label(), &req.name)?;
        let (metadata_location, bytes, file) = self.read_metadata_file(&req.metadata_location).await?;
        let md: ViewMetadata = parse_file(&bytes, "view metadata")?;
        if md.current_version().is_none() {
            return Err(ApiError::bad_request(format!(
                "invalid view metadata file {}: current version {} is not among its versions",
                req.metadata_location, md.current_version_id
            )));
        }
        let location = self.resolve_location(&md.location)?;
        let mut record = RecordBuilder::with_capacity(bytes.len() + metadata_location.len() + 13);
        for field in [metadata_location.as_bytes(), &bytes, b""] {
            record.bytes(field);
        }
        let record = complete(record, file).await;
        write_load_result(out, Some(&metadata_location), &bytes, true);
        self.insert_object(a, ObjectKind::View, ns, &req.name, &record, &location, false, seal, out)
            .await
            .map_err(|r| r.into_api(write_failure))
    }
}

#[cfg(test)]
mod tests {
    use bumpalo::Bump;

    use super::super::test_support::{json, with_catalog, SCHEMA};
    use super::super::Seal;
    use crate::error::ErrorKind;

    fn create_body(name: &str) -> Vec<u8> {
        format!(
            r#"{{"name":"{name}","schema":{SCHEMA},"view-version":{{"version-id":1,"timestamp-ms":1,"schema-id":0,
            "summary":{{}},"representations":[{{"type":"sql","sql":"SELECT 1 AS id","dialect":"spark"}}],
            "default-namespace":["db"]}}}}"#
        )
        .into_bytes()
    }

    /// The metadata files of view `name`, in its default location `db/<name>-<uuid>`.
    fn metadata_files(root: &std::path::Path, name: &str) -> Vec<String> {
        let prefix = format!("{name}-");
        let mut dirs = std::fs::read_dir(root.join("db")).unwrap().map(|e| e.unwrap().path());
        let dir = dirs.find(|d| d.file_name().unwrap().to_str().unwrap().starts_with(&prefix)).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.join("metadata"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_clash_with_tables_both_ways_and_refusals_leave_no_files() {
        with_catalog(async |c, root| {
            let a = Bump::new();
            let ns = &["db"][..];
            c.create_view(&a, ns, &create_body("v"), &mut Vec::new(), &Seal::none()).await.unwrap();
            let table = format!(r#"{{"name":"t","schema":{SCHEMA}}}"#);
            c.create_table(&a, ns, table.as_bytes(), &mut Vec::new(), &Seal::none()).await.unwrap();

            let err = c.create_view(&a, ns, &create_body("t"), &mut Vec::new(), &Seal::none()).await.unwrap_err();
            assert_eq!((err.kind, &*err.message), (ErrorKind::AlreadyExists, "Table already exists: db.t"));
            let err = c.create_view(&a, ns, &create_body("v"), &mut Vec::new(), &Seal::none()).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::AlreadyExists);
            let table_v = format!(r#"{{"name":"v","schema":{SCHEMA}}}"#);
            let err = c.create_table(&a, ns, table_v.as_bytes(), &mut Vec::new(), &Seal::none()).await.unwrap_err();
            assert_eq!((err.kind, &*err.message), (ErrorKind::AlreadyExists, "View already exists: db.v"));

            let mut out = Vec::new();
            c.load_view(&a, ns, "v", false, &mut out).await.unwrap();
            let loaded = json(&out);
            assert_eq!(loaded["config"], serde_json::json!({}));
            let location = loaded["metadata-location"].as_str().unwrap().to_string();
            // A failed requirement is a 409 and writes nothing.
            let stale = br#"{"requirements":[{"type":"assert-view-uuid","uuid":"nope"}],"updates":[{"action":"set-properties","updates":{"a":"b"}}]}"#;
            let err = c.replace_view(&a, ns, "v", stale, &mut Vec::new(), &Seal::none()).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::CommitFailed);
            assert_eq!(metadata_files(&root, "v").len(), 1);
            assert!(location.ends_with(&metadata_files(&root, "v")[0]));
            assert_eq!(c.load_view(&a, ns, "t", false, &mut Vec::new()).await.unwrap_err().kind, ErrorKind::NoSuchView);
            assert_eq!(
                c.load_view(&a, &["nope"], "v", false, &mut Vec::new()).await.unwrap_err().kind,
                ErrorKind::NoSuchNamespace
            );
        });
    }

    #[test]
    fn concurrent_replaces_all_land_in_consecutive_files() {
        with_catalog(async |c, root| {
            c.create_view(&Bump::new(), &["db"], &create_body("v"), &mut Vec::new(), &Seal::none()).await.unwrap();
            const N: usize = 8;
            let tasks: Vec<_> = (0..N)
                .map(|i| {
                    let c = c.clone();
                    glommio::spawn_local(async move {
                        let body = format!(r#"{{"updates":[{{"action":"set-properties","updates":{{"k{i}":"v"}}}}]}}"#);
                        let mut out = Vec::new();
                        c.replace_view(&Bump::new(), &["db"], "v", body.as_bytes(), &mut out, &Seal::none())
                            .await
                            .map(|()| out)
                    })
                })
                .collect();
            for t in tasks {
                let out = t.await.unwrap();
                assert_eq!(json(&out)["config"], serde_json::json!({}));
            }
            let mut out = Vec::new();
            c.load_view(&Bump::new(), &["db"], "v", false, &mut out).await.unwrap();
            let loaded = json(&out);
            assert_eq!(loaded["metadata"]["properties"].as_object().unwrap().len(), N);
            // Losers of a race deleted their files: versions 0..=N, one file each.
            let files = metadata_files(&root, "v");
            let versions: Vec<&str> = files.iter().map(|f| &f[..5]).collect();
            let expected: Vec<String> = (0..=N).map(|v| format!("{v:05}")).collect();
            assert_eq!(versions, expected);
            assert!(loaded["metadata-location"].as_str().unwrap().ends_with(files.last().unwrap()));

            c.drop_view(&Bump::new(), &["db"], "v", &Seal::none()).await.unwrap();
            assert_eq!(c.view_exists(&Bump::new(), &["db"], "v").await.unwrap_err().kind, ErrorKind::NoSuchView);
            let register =
                format!(r#"{{"name":"back","metadata-location":"{}"}}"#, loaded["metadata-location"].as_str().unwrap());
            let mut out = Vec::new();
            c.register_view(&Bump::new(), &["db"], register.as_bytes(), &mut out, &Seal::none()).await.unwrap();
            assert_eq!(json(&out)["metadata"], loaded["metadata"]);
        });
    }
}
