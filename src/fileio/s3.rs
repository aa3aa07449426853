//! An S3 (or S3-compatible) warehouse through the `object_store` crate,
//! driven on the I/O thread (`io_thread.rs`).
//!
//! Locations are `s3://bucket/key` URIs (`s3a://` and `s3n://` read as
//! `s3://`), normalised lexically (`.`, `..`, repeated slashes): S3 has no
//! links, so that is all a key can hide.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredentialProvider, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

use super::io_thread::IoThread;
use super::location::{self, LocationError};
use super::{FileIo, ReadError, MAX_METADATA_FILE};
use crate::warehouse::{bucket_of, is_s3, S3Settings};

/// The client retries a failed request (5xx, connection errors, timeouts)
/// at most this many times, within three request timeouts; an operation
/// is abandoned after four (`S3Settings::request_timeout_ms`).
const RETRIES: usize = 2;
/// A purge lists and deletes many objects: it gets at least this long.
const PURGE_LIMIT: Duration = Duration::from_secs(120);

/// A warehouse under `s3://bucket[/prefix]`.
pub struct S3FileIo {
    store: Arc<dyn ObjectStore>,
    io: IoThread,
    /// `s3://bucket` or `s3://bucket/prefix`, normalised.
    root: String,
    bucket: String,
    /// How long one operation may take, retries included.
    limit: Duration,
}

impl S3FileIo {
    /// Builds the client (no request is made: a missing bucket shows on the
    /// first write). `settings` says how to reach the bucket.
    pub fn new(root: &str, settings: &S3Settings, io: IoThread) -> Result<S3FileIo, String> {
        let root = normalise(root).map_err(|e| format!("warehouse root {root:?}: {e}"))?;
        let bucket = bucket_of(&root).ok_or_else(|| format!("warehouse root {root:?} names no valid bucket"))?;
        let store = client(&root, bucket, settings)?;
        let limit = Duration::from_millis(settings.request_timeout_ms) * 4;
        Ok(S3FileIo { store: Arc::new(store), io, bucket: bucket.to_string(), root, limit })
    }

    /// The object path of a normalised location inside the warehouse.
    fn key(&self, location: &str) -> Result<Path, LocationError> {
        let location = self.inside(location)?;
        key_of(&location, &self.bucket)
    }

    /// A location strictly inside the warehouse, normalised.
    fn inside(&self, location: &str) -> Result<String, LocationError> {
        let location = normalise(location)?;
        if location == self.root {
            Err(LocationError::Root)
        } else if location.strip_prefix(&self.root).is_some_and(|rest| rest.starts_with('/')) {
            Ok(location)
        } else {
            Err(LocationError::Outside)
        }
    }
}

/// `s3://bucket/key` with the key cleaned: no `.`, no empty segments, `..`
/// resolved (never above the bucket); no trailing slash.
fn normalise(location: &str) -> Result<String, LocationError> {
    if location.chars().any(char::is_control) {
        return Err(LocationError::Invalid);
    }
    if !is_s3(location) {
        return Err(LocationError::NotS3);
    }
    let bucket = bucket_of(location).ok_or(LocationError::NotS3)?;
    let key = location.split_once("://").map_or("", |(_, rest)| &rest[bucket.len()..]);
    let mut parts: Vec<&str> = Vec::new();
    for part in key.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = format!("s3://{bucket}");
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    Ok(out)
}

/// The object key of a normalised location of `bucket`.
fn key_of(location: &str, bucket: &str) -> Result<Path, LocationError> {
    let key = location.strip_prefix("s3://").and_then(|r| r.strip_prefix(bucket)).ok_or(LocationError::Outside)?;
    Path::parse(key.trim_start_matches('/')).map_err(|_| LocationError::Invalid)
}

/// The `object_store` client of a warehouse (no request is made yet).
fn client(root: &str, bucket: &str, settings: &S3Settings) -> Result<AmazonS3, String> {
    let mut builder = match settings.credentials.static_keys()? {
        Some(keys) => {
            let b = AmazonS3Builder::new()
                .with_access_key_id(keys.access_key_id)
                .with_secret_access_key(keys.secret_access_key);
            match keys.session_token {
                Some(t) => b.with_token(t),
                None => b,
            }
        }
        // The AWS chain: keys in the environment, web identity
        // (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, its STS at
        // AWS_ENDPOINT_URL_STS), container credentials, then instance metadata.
        None => AmazonS3Builder::from_env(),
    };
    let request = Duration::from_millis(settings.request_timeout_ms);
    builder = builder
        .with_bucket_name(bucket)
        .with_region(&settings.region)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(RetryConfig { max_retries: RETRIES, retry_timeout: request * 3, ..RetryConfig::default() })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(request)
                .with_connect_timeout(request)
                .with_allow_http(settings.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
        );
    builder = match (&settings.endpoint, settings.path_style) {
        (Some(endpoint), true) => builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false),
        // Virtual-hosted on a custom endpoint: the bucket is the host's first label.
        (Some(endpoint), false) => {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            builder.with_endpoint(format!("{scheme}://{bucket}.{host}")).with_virtual_hosted_style_request(true)
        }
        (None, path_style) => builder.with_virtual_hosted_style_request(!path_style),
    };
    builder.build().map_err(|e| format!("S3 warehouse {root}: {e}"))
}

/// The credential provider `object_store` builds for a warehouse from the
/// AWS chain, for delegation to sign with the keys the file I/O uses. It
/// caches temporary credentials and renews them before they expire; ask
/// it on a tokio runtime (an `IoThread`).
pub fn chain_provider(root: &str, settings: &S3Settings) -> Result<AwsCredentialProvider, String> {
    let root = normalise(root).map_err(|e| format!("warehouse root {root:?}: {e}"))?;
    let bucket = bucket_of(&root).ok_or_else(|| format!("warehouse root {root:?} names no valid bucket"))?;
    Ok(client(&root, bucket, settings)?.credentials().clone())
}

/// An object store error as an `io::Error` that names no bucket, key or
/// credential: the kinds the catalog maps (`NotFound`, `AlreadyExists`,
/// `TimedOut`) and a generic one, which counts as a storage fault (S3
/// refusing the server's own credentials is one too, not the client's).
fn io_error(e: object_store::Error) -> io::Error {
    use object_store::Error::*;
    let kind = match &e {
        NotFound { .. } => io::ErrorKind::NotFound,
        AlreadyExists { .. } | Precondition { .. } => io::ErrorKind::AlreadyExists,
        _ if timed_out(&e) => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    // The full error (bucket, key, HTTP status) goes to the log only.
    tracing::warn!(error = %e, "object store request failed");
    io::Error::new(kind, "object store request failed")
}

/// Whether a request timed out: the HTTP client's timeout error sits
/// somewhere down the source chain and has no type we can name here.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(e) = at {
        if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
            || e.to_string().contains("timed out")
        {
            return true;
        }
        at = e.source();
    }
    false
}

fn refused(e: LocationError) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
}

impl FileIo for S3FileIo {
    async fn write_new(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.key(location).map_err(refused)?;
        let payload = PutPayload::from(crate::bulk::to_vec(bytes).await);
        let store = self.store.clone();
        self.io
            .run(self.limit, async move {
                let create = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
                match store.put_opts(&path, payload.clone(), create).await {
                    Ok(_) => Ok(()),
                    // A retried PUT whose first try landed: the name is new
                    // (a fresh UUID), so the object there is ours if it has our bytes.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        let there = store.get(&path).await.map_err(io_error)?.bytes().await.map_err(io_error)?;
                        let ours: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
                        if there.as_ref() == ours.as_slice() {
                            Ok(())
                        } else {
                            Err(io::Error::new(io::ErrorKind::AlreadyExists, "metadata file exists"))
                        }
                    }
                    // A PUT finds no object to miss: the bucket is gone.
                    Err(e @ object_store::Error::NotFound { .. }) => {
                        tracing::error!(error = %e, "the warehouse bucket does not exist");
                        Err(io::Error::other("the warehouse bucket does not exist"))
                    }
                    Err(e) => Err(io_error(e)),
                }
            })
            .await
    }

    async fn read(&self, location: &str) -> Result<Vec<u8>, ReadError> {
        let path = self.key(location).map_err(ReadError::Location)?;
        let store = self.store.clone();
        let got = self
            .io
            .run(self.limit, async move {
                let head = match store.head(&path).await {
                    Ok(h) => h,
                    Err(object_store::Error::NotFound { .. }) => return Ok(Err(ReadError::Missing)),
                    Err(e) => return Err(io_error(e)),
                };
                if head.size > MAX_METADATA_FILE {
                    return Ok(Err(ReadError::TooLarge));
                }
                if head.size == 0 {
                    // No range to ask for; the caller refuses it as metadata.
                    return Ok(Ok(Vec::new()));
                }
                // Bounded again: the object may have been replaced since the HEAD.
                let range = 0..(head.size.min(MAX_METADATA_FILE));
                let options = GetOptions { range: Some(range.into()), ..GetOptions::default() };
                let bytes = match store.get_opts(&path, options).await {
                    Ok(r) => r.bytes().await.map_err(io_error)?,
                    Err(object_store::Error::NotFound { .. }) => return Ok(Err(ReadError::Missing)),
                    Err(e) => return Err(io_error(e)),
                };
                Ok(Ok(bytes.to_vec()))
            })
            .await;
        got.map_err(ReadError::Io)?
    }

    fn resolve(&self, location: &str) -> Result<String, LocationError> {
        let location = self.inside(location)?;
        key_of(&location, &self.bucket)?;
        Ok(location)
    }

    fn normalise(&self, location: &str) -> Result<String, LocationError> {
        normalise(location)
    }

    fn root(&self) -> &str {
        &self.root
    }

    async fn size(&self, location: &str) -> io::Result<Option<u64>> {
        let path = self.key(location).map_err(refused)?;
        let store = self.store.clone();
        self.io
            .run(self.limit, async move {
                match store.head(&path).await {
                    Ok(h) => Ok(Some(h.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(io_error(e)),
                }
            })
            .await
    }

    async fn restore(&self, location: &str, bytes: &[u8]) -> io::Result<()> {
        // A PUT replaces an object atomically: readers see the old or the new.
        let path = self.key(location).map_err(refused)?;
        let payload = PutPayload::from(crate::bulk::to_vec(bytes).await);
        let store = self.store.clone();
        self.io.run(self.limit, async move { store.put(&path, payload).await.map(drop).map_err(io_error) }).await
    }

    async fn delete(&self, location: &str) -> io::Result<()> {
        let path = self.key(location).map_err(refused)?;
        let store = self.store.clone();
        self.io
            .run(self.limit, async move {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(io_error(e)),
                }
            })
            .await
    }

    async fn delete_tree(&self, location: &str, keep: Vec<String>) -> io::Result<()> {
        let prefix = self.key(location).map_err(refused)?;
        // Kept subtrees as object paths; a location of another bucket or scheme keeps nothing here.
        let keep: Vec<Path> =
            keep.iter().filter_map(|k| normalise(k).ok()).filter_map(|k| key_of(&k, &self.bucket).ok()).collect();
        let store = self.store.clone();
        self.io
            .run(PURGE_LIMIT.max(self.limit), async move {
                // `list` matches whole segments: `t` lists `t/...`, never `t2/...`.
                let mut listed = store.list(Some(&prefix));
                let mut doomed = Vec::new();
                while let Some(meta) = listed.next().await {
                    let meta = meta.map_err(io_error)?;
                    if !keep.iter().any(|k| meta.location.prefix_matches(k)) {
                        doomed.push(Ok(meta.location));
                    }
                }
                let mut deleted = store.delete_stream(futures_lite::stream::iter(doomed).boxed());
                while let Some(done) = deleted.next().await {
                    match done {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(io_error(e)),
                    }
                }
                Ok(())
            })
            .await
    }

    fn default_location(&self, namespace: &[&str], name: &str, uuid: &str) -> String {
        location::default_location(&self.root, namespace, name, uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> S3FileIo {
        let settings =
            S3Settings { endpoint: Some("http://127.0.0.1:1".into()), path_style: true, ..S3Settings::default() };
        S3FileIo::new("s3://bkt/wh/", &settings, IoThread::start("bingsan-test-s3").unwrap()).unwrap()
    }

    #[test]
    fn s3_locations_are_normalised_and_confined_to_the_warehouse() {
        let f = files();
        assert_eq!(f.root(), "s3://bkt/wh");
        assert_eq!(f.resolve("s3a://bkt//wh/./ns/../ns/t/").unwrap(), "s3://bkt/wh/ns/t");
        assert_eq!(f.resolve("s3://bkt/wh"), Err(LocationError::Root));
        for outside in ["s3://bkt/wh2/t", "s3://bkt/wh/../x", "s3://other/wh/t", "s3://bkt/t"] {
            assert_eq!(f.resolve(outside), Err(LocationError::Outside), "{outside}");
        }
        assert_eq!(f.resolve("file:///wh/t"), Err(LocationError::NotS3));
        assert_eq!(f.resolve("/wh/t"), Err(LocationError::NotS3));
        assert_eq!(f.resolve("s3://bkt/wh/\nx"), Err(LocationError::Invalid));
        assert_eq!(f.normalise("s3://other/a/../b").unwrap(), "s3://other/b");
        assert_eq!(f.default_location(&["a/b", ".."], "t", "u-1"), "s3://bkt/wh/a_b/_./t-u-1");
        assert_eq!(key_of("s3://bkt/wh/ns/t", "bkt").unwrap().as_ref(), "wh/ns/t");
    }
}
