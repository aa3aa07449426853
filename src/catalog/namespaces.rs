//! Namespace operations.
//!
//! A namespace record is one state byte then its properties as a JSON
//! object, so loading a namespace copies stored bytes without parsing.
//! Dropping first marks the record `DROPPING` (a version bump), then checks
//! emptiness: creates of children assert the parent's version, so none can
//! slip in between the check and the delete.

use std::collections::BTreeMap;

use bumpalo::Bump;
use serde::Deserialize;
use sonic_rs::error::Category;

use super::ident::{validate_namespace, write_namespace};
use super::kind::ObjectKind;
use super::paging::{close_listing, Page};
use super::retry::Retry;
use super::seal::Seal;
use super::{store_failure, Catalog};
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::fileio::FileIo;
use crate::json::write_str;
use crate::pool::PooledBuf;
use crate::store::{keys, Expect, Store, StoreError, Versioned, Write};

const LIVE: u8 = 0;
const DROPPING: u8 = 1;
#[derive(Deserialize)]
struct CreateNamespaceRequest {
    namespace: Vec<String>,
    #[serde(default)]
    properties: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct UpdatePropertiesRequest {
    #[serde(default)]
    removals: Option<Vec<String>>,
    #[serde(default)]
    updates: Option<BTreeMap<String, String>>,
}

/// A namespace as stored.
pub(crate) struct NamespaceRecord<V> {
    pub version: u64,
    pub live: bool,
    raw: V,
}

impl<V: AsRef<[u8]>> NamespaceRecord<V> {
    fn properties_json(&self) -> &[u8] {
        &self.raw.as_ref()[1..]
    }
}

fn encode_record(state: u8, properties: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = vec![state];
    sonic_rs::to_writer(&mut out, properties).expect("string map serializes");
    out
}

pub(crate) fn no_such_namespace(ns: &[&str]) -> ApiError {
    ApiError::new(ErrorKind::NoSuchNamespace, format!("Namespace does not exist: {}", ns.join(".")))
}

/// createNamespace lists no 404 in the spec: a missing parent is a bad
/// request (400) whose message names what is missing.
fn no_such_parent(parent: &[&str]) -> ApiError {
    ApiError::bad_request(format!("Parent namespace does not exist: {}", parent.join(".")))
}

/// Parses JSON the server holds or a client sent. The message keeps what
/// went wrong and where, but not the fragment of the input sonic-rs quotes
/// after the position.
pub(crate) fn parse_json<'de, T: Deserialize<'de>>(body: &'de [u8], what: &str) -> ApiResult<T> {
    sonic_rs::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let described = message.split_once("\n").map_or(message.as_str(), |(d, _)| d);
        ApiError::bad_request(format!("invalid {what}: {described}"))
    })
}

/// Parses a file the server read because a client named it (register): the
/// message says only the kind of error and where, never a value from it.
pub(crate) fn parse_file<'de, T: Deserialize<'de>>(bytes: &'de [u8], what: &str) -> ApiResult<T> {
    sonic_rs::from_slice(bytes).map_err(|e: sonic_rs::Error| {
        let kind = match e.classify() {
            Category::Syntax | Category::Eof => "not JSON",
            _ => "JSON of another shape",
        };
        ApiError::bad_request(format!("not valid {what}: {kind} at line {} column {}", e.line(), e.column()))
    })
}

impl<S: Store, F: FileIo> Catalog<S, F> {
    pub(crate) async fn namespace_record(&self, a: &Bump, ns: &[&str]) -> ApiResult<Option<NamespaceRecord<S::Value>>> {
        let key = keys::namespace(a, ns);
        let rec = self.store.get(key).await.map_err(store_failure)?;
        Ok(rec.map(|Versioned { version, value }| {
            let live = value.as_ref().first() == Some(&LIVE);
            NamespaceRecord { version, live, raw: value }
        }))
    }

    /// The version of a live namespace, for children to assert on create.
    pub(crate) async fn live_namespace_version(&self, a: &Bump, ns: &[&str]) -> ApiResult<u64> {
        validate_namespace(ns)?;
        match self.namespace_record(a, ns).await? {
            Some(rec) if rec.live => Ok(rec.version),
            _ => Err(no_such_namespace(ns)),
        }
    }

    /// `GET /v1/namespaces/{ns}`.
    pub async fn load_namespace(&self, a: &Bump, ns: &[&str], out: &mut Vec<u8>) -> ApiResult<()> {
        validate_namespace(ns)?;
        let rec = self.namespace_record(a, ns).await?.ok_or_else(|| no_such_namespace(ns))?;
        out.extend_from_slice(b"{\"namespace\":");
        write_namespace(out, ns);
        out.extend_from_slice(b",\"properties\":");
        out.extend_from_slice(rec.properties_json());
        out.push(b'}');
        Ok(())
    }

    /// `HEAD /v1/namespaces/{ns}`.
    pub async fn namespace_exists(&self, a: &Bump, ns: &[&str]) -> ApiResult<()> {
        validate_namespace(ns)?;
        match self.namespace_record(a, ns).await? {
            Some(_) => Ok(()),
            None => Err(no_such_namespace(ns)),
        }
    }

    /// `POST /v1/namespaces`.
    pub async fn create_namespace(&self, a: &Bump, body: &[u8], out: &mut PooledBuf, seal: &Seal<'_>) -> ApiResult<()> {
        let req: CreateNamespaceRequest = parse_json(body, "CreateNamespaceRequest")?;
        validate_namespace(&req.namespace)?;
        let ns: Vec<&str> = req.namespace.iter().map(String::as_str).collect();
        let properties = req.properties.unwrap_or_default();
        let value = encode_record(LIVE, &properties);
        let key = keys::namespace(a, &ns);
        let parent = &ns[..ns.len() - 1];
        let answer = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"namespace\":");
            write_namespace(out, &ns);
            out.extend_from_slice(b",\"properties\":");
            out.extend_from_slice(&value[1..]);
            out.push(b'}');
        };
        // A keyed request stores its answer with the write. Otherwise `out`
        // is written (taken from the pool) only once the write is durable,
        // so waiting writers do not empty the pool.
        let sealed_answer = seal.keyed();
        if sealed_answer {
            answer(out);
        }
        let outcome = if parent.is_empty() {
            seal.apply(&self.store, &[Write::put(key, Expect::Absent, &value)], 200, out).await
        } else {
            let parent_version = match self.namespace_record(a, parent).await? {
                Some(rec) if rec.live => rec.version,
                _ => return Err(no_such_parent(parent)),
            };
            let parent_key = keys::namespace(a, parent);
            let batch =
                [Write::check(parent_key, Expect::Version(parent_version)), Write::put(key, Expect::Absent, &value)];
            seal.apply(&self.store, &batch, 200, out).await
        };
        match outcome {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) if self.store.get(key).await.map_err(store_failure)?.is_some() => {
                return Err(ApiError::new(
                    ErrorKind::AlreadyExists,
                    format!("Namespace already exists: {}", ns.join(".")),
                ))
            }
            Err(StoreError::Conflict { .. }) => return Err(no_such_parent(parent)),
            Err(e) => return Err(write_failure(e)),
        }
        if !sealed_answer {
            answer(out);
        }
        Ok(())
    }

    /// `DELETE /v1/namespaces/{ns}`: 409 unless it has no namespaces, tables
    /// or views inside.
    pub async fn drop_namespace(&self, a: &Bump, ns: &[&str], seal: &Seal<'_>) -> ApiResult<()> {
        validate_namespace(ns)?;
        let key = keys::namespace(a, ns);
        let mut retry = Retry::new();
        while retry.next().await {
            let rec = self.namespace_record(a, ns).await?.ok_or_else(|| no_such_namespace(ns))?;
            let mut marked = rec.raw.as_ref().to_vec();
            marked[0] = DROPPING;
            match self.store.apply(&[Write::put(key, Expect::Version(rec.version), &marked)]).await {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(write_failure(e)),
            }
            let dropping = rec.version + 1;
            if self.has_children(a, ns).await? {
                marked[0] = LIVE;
                // Best effort: a concurrent drop may have moved on already.
                let _ = self.store.apply(&[Write::put(key, Expect::Version(dropping), &marked)]).await;
                return Err(ApiError::new(
                    ErrorKind::NamespaceNotEmpty,
                    format!("Namespace is not empty: {}", ns.join(".")),
                ));
            }
            return match seal.apply(&self.store, &[Write::delete(key, Expect::Version(dropping))], 204, &[]).await {
                Ok(()) => Ok(()),
                Err(StoreError::Conflict { .. }) => Err(no_such_namespace(ns)),
                Err(e) => Err(write_failure(e)),
            };
        }
        Err(ApiError::new(ErrorKind::CommitFailed, "namespace changed concurrently; retry"))
    }

    async fn has_children(&self, a: &Bump, ns: &[&str]) -> ApiResult<bool> {
        let prefixes =
            [keys::namespace_children(a, ns), ObjectKind::Table.prefix(a, ns), ObjectKind::View.prefix(a, ns)];
        for prefix in prefixes {
            let mut any = false;
            self.store
                .scan_keys(prefix, None, |_| {
                    any = true;
                    false
                })
                .await
                .map_err(store_failure)?;
            if any {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `POST /v1/namespaces/{ns}/properties`.
    pub async fn update_properties(
        &self,
        a: &Bump,
        ns: &[&str],
        body: &[u8],
        out: &mut Vec<u8>,
        seal: &Seal<'_>,
    ) -> ApiResult<()> {
        validate_namespace(ns)?;
        let req: UpdatePropertiesRequest = parse_json(body, "UpdateNamespacePropertiesRequest")?;
        let removals = req.removals.unwrap_or_default();
        let updates = req.updates.unwrap_or_default();
        if let Some(k) = removals.iter().find(|k| updates.contains_key(*k)) {
            return Err(ApiError::new(
                ErrorKind::UnprocessableEntity,
                format!("property {k:?} is both set and removed"),
            ));
        }
        let key = keys::namespace(a, ns);
        let mut retry = Retry::new();
        while retry.next().await {
            let rec = self.namespace_record(a, ns).await?.ok_or_else(|| no_such_namespace(ns))?;
            let mut props: BTreeMap<String, String> = parse_json(rec.properties_json(), "stored properties")?;
            let (mut removed, mut missing) = (Vec::new(), Vec::new());
            for k in &removals {
                match props.remove(k) {
                    Some(_) => removed.push(k.as_str()),
                    None => missing.push(k.as_str()),
                }
            }
            props.extend(updates.iter().map(|(k, v)| (k.clone(), v.clone())));
            let state = rec.raw.as_ref()[0];
            let value = encode_record(state, &props);
            out.clear();
            out.extend_from_slice(b"{\"updated\":");
            crate::json::write_str_array(out, updates.keys().map(String::as_str));
            out.extend_from_slice(b",\"removed\":");
            crate::json::write_str_array(out, removed);
            out.extend_from_slice(b",\"missing\":");
            crate::json::write_str_array(out, missing);
            out.push(b'}');
            match seal.apply(&self.store, &[Write::put(key, Expect::Version(rec.version), &value)], 200, out).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(write_failure(e)),
            }
        }
        Err(ApiError::new(ErrorKind::CommitFailed, "namespace properties changed concurrently; retry"))
    }

    /// `GET /v1/namespaces?parent=..&pageToken=..&pageSize=..`.
    pub async fn list_namespaces(&self, a: &Bump, parent: &[&str], query: &str, out: &mut Vec<u8>) -> ApiResult<()> {
        let page = Page::from_query(query, self.settings.default_page_size, self.settings.max_page_size, a)?;
        if !parent.is_empty() {
            self.namespace_exists(a, parent).await?;
        }
        let prefix = keys::namespace_children(a, parent);
        out.extend_from_slice(b"{\"namespaces\":[");
        let last = self
            .scan_names(
                a,
                prefix,
                &page,
                |i, name, out: &mut Vec<u8>| {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'[');
                    for p in parent {
                        write_str(out, p);
                        out.push(b',');
                    }
                    write_str(out, name);
                    out.push(b']');
                },
                out,
            )
            .await?;
        close_listing(out, page.paged, last);
        Ok(())
    }

    /// Visits up to `page.size` names under `prefix` after the page token,
    /// returning the last name when more remain (the next token).
    pub(crate) async fn scan_names<'a>(
        &self,
        a: &'a Bump,
        prefix: &[u8],
        page: &Page<'_>,
        mut write: impl FnMut(usize, &str, &mut Vec<u8>),
        out: &mut Vec<u8>,
    ) -> ApiResult<Option<&'a [u8]>> {
        let after = page.after.map(|name| keys::join(a, prefix, name));
        let mut count = 0;
        let mut more: Option<&'a [u8]> = None;
        let mut last_name: &'a [u8] = &[];
        self.store
            .scan_keys(prefix, after, |key| {
                let name = &key[prefix.len()..];
                if count == page.size {
                    more = Some(last_name);
                    return false;
                }
                // Names were validated on the way in, so they are UTF-8.
                write(count, std::str::from_utf8(name).unwrap_or(""), out);
                count += 1;
                if page.paged {
                    last_name = a.alloc_slice_copy(name);
                }
                true
            })
            .await
            .map_err(store_failure)?;
        Ok(more)
    }
}

/// Maps a failed durable write: the outcome is unknown, so never a 4xx; the
/// client learns the cause, the log the store's own words.
pub(crate) fn write_failure(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store write failed");
    let mut failure = crate::disk::store_write_failed(&e);
    failure.message = format!("{} (the write's outcome is unknown)", failure.message).into();
    failure
}
