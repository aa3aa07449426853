//! Remote signing (`POST /v1/aws/s3/sign`, the Iceberg AWS S3 signer API):
//! the server signs a client's S3 request with its own credentials, only
//! for objects under the location of a table the client loaded.
//!
//! Proof of the load is a grant: a load with remote signing gives the
//! client a signer endpoint whose query carries the table's location, the
//! principal that loaded it (under `--auth`), an expiry and an HMAC of all
//! three: a grant is worth nothing to another principal, and cannot be
//! widened (any change breaks the HMAC). The HMAC key is derived from the
//! signing warehouses' static server secrets, so every node serving the
//! same warehouses checks the grants of every other (a client's sign
//! requests reach any node behind a load balancer) with no state shared
//! between shards or nodes; rotating a server key makes new grants
//! (clients reload). Server keys from the AWS chain have no stable secret:
//! then the key is random per process (`Delegation::new` logs it).

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bumpalo::Bump;
use ring::{hkdf, hmac};
use serde::Deserialize;

use super::policy::split_s3;
use super::sts::ServerKey;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::http::percent::{decode, query_pairs};
use crate::json::{write_str, write_str_array};

/// The signer path, as PyIceberg and Iceberg Java default to it.
pub const SIGN_PATH: &str = "v1/aws/s3/sign";

/// How long a grant stays valid after the load that made it.
pub const GRANT_SECS: u64 = 3600;

/// Headers left unsigned: proxies and SDKs rewrite them.
const UNSIGNED: [&str; 4] = ["user-agent", "expect", "x-amzn-trace-id", "authorization"];

/// Mints and checks grants.
pub struct Grants {
    key: hmac::Key,
}

impl Grants {
    /// A fresh random key: grants live as long as the process.
    pub fn random() -> Grants {
        let rng = ring::rand::SystemRandom::new();
        Grants { key: hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system randomness") }
    }

    /// The key of every node whose signing warehouses have these server
    /// secret keys (HKDF-SHA256 of them, each length-prefixed): the same on
    /// every node, unknown to anyone without the secrets, and revealing
    /// nothing of them. No secret (no signing warehouse): a random key.
    pub fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Grants {
        let mut ikm = Vec::new();
        for secret in secrets {
            ikm.extend_from_slice(&(secret.len() as u64).to_be_bytes());
            ikm.extend_from_slice(secret.as_bytes());
        }
        if ikm.is_empty() {
            return Grants::random();
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"bingsan remote-signing grants").extract(&ikm);
        let okm = prk.expand(&[b"v1"], hmac::HMAC_SHA256).expect("an HMAC key is a valid HKDF length");
        Grants { key: hmac::Key::from(okm) }
    }

    /// The grant for `location` to `principal` (`""` without `--auth`)
    /// until `expires` (seconds since the epoch): `base64url(expires ‖
    /// principal length (u16) ‖ principal ‖ location).base64url(hmac)`,
    /// URL-safe as it is. A principal is at most a JWT's 8 KiB payload; a
    /// longer one would get a grant no check accepts.
    pub fn mint(&self, location: &str, principal: &str, expires: u64, out: &mut Vec<u8>) {
        let len = u16::try_from(principal.len()).unwrap_or(u16::MAX);
        let mut payload = Vec::with_capacity(10 + principal.len() + location.len());
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(principal.as_bytes());
        payload.extend_from_slice(location.as_bytes());
        let tag = hmac::sign(&self.key, &payload);
        let mut text = B64.encode(&payload);
        text.push('.');
        B64.encode_string(tag.as_ref(), &mut text);
        out.extend_from_slice(text.as_bytes());
    }

    /// The location a grant allows `principal`, if the grant is ours, for
    /// that principal, and not expired.
    pub fn check(&self, grant: &str, principal: &str, now: u64) -> Option<String> {
        let (payload, tag) = grant.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        hmac::verify(&self.key, &payload, &B64.decode(tag).ok()?).ok()?;
        let expires = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
        (now < expires).then_some(())?;
        let len = usize::from(u16::from_be_bytes(payload.get(8..10)?.try_into().ok()?));
        (payload.get(10..10 + len)? == principal.as_bytes()).then_some(())?;
        String::from_utf8(payload[10 + len..].to_vec()).ok()
    }
}

/// The body of a sign request (`S3SignRequest`).
#[derive(Deserialize)]
pub struct SignRequest {
    pub region: String,
    pub uri: String,
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
}

fn forbidden(why: &str) -> ApiError {
    ApiError::new(ErrorKind::Forbidden, format!("not signed: {why}"))
}

/// The S3 object (or listing prefix) a request URI names, checked against
/// the granted `location` (`s3://bucket/prefix`): a key under `prefix/`,
/// or a bucket listing whose `prefix` parameter is under it.
pub fn check_target(uri: &str, method: &str, location: &str, a: &Bump) -> ApiResult<()> {
    let (bucket, prefix) = split_s3(location).ok_or_else(|| forbidden("the grant names no S3 location"))?;
    let rest = uri.split_once("://").map(|(_, r)| r).ok_or_else(|| forbidden("the uri is not absolute"))?;
    let (authority, path_query) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = decode(path, false, a).map_err(|_| forbidden("invalid percent-encoding in the uri"))?;
    let path = path.strip_prefix('/').unwrap_or(path);
    // Virtual-hosted (`bucket.host/key`) or path-style (`host/bucket/key`).
    let key = match host.strip_prefix(bucket).and_then(|h| h.strip_prefix('.')) {
        Some(_) => path,
        None => match path.split_once('/') {
            Some((b, key)) if b == bucket => key,
            None if path == bucket => "",
            _ => return Err(forbidden("the uri is outside the table's location")),
        },
    };
    let under = |k: &str| k.len() > prefix.len() && k.starts_with(prefix) && k.as_bytes()[prefix.len()] == b'/';
    let segments_ok = |k: &str| !k.split('/').any(|s| s == ".." || s == ".");
    if !key.is_empty() {
        return if under(key) && segments_ok(key) {
            Ok(())
        } else {
            Err(forbidden("the uri is outside the table's location"))
        };
    }
    // A bucket-level request: only a listing under the location.
    let listed = query_pairs(query).find(|(k, _)| *k == "prefix").map(|(_, v)| decode(v, true, a));
    match (method.eq_ignore_ascii_case("GET"), listed) {
        (true, Some(Ok(p))) if under(p) && segments_ok(p) => Ok(()),
        _ => Err(forbidden("only listings under the table's location are signed at the bucket level")),
    }
}

/// Signs `req` with `key` and writes the `S3SignResponse`: the URI, and
/// the headers the client must add (those it did not send).
pub fn sign(req: &SignRequest, key: &ServerKey, now: SystemTime, out: &mut Vec<u8>) -> ApiResult<()> {
    use aws_sigv4::http_request::{
        sign, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    };
    let joined: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, _)| !UNSIGNED.iter().any(|u| k.eq_ignore_ascii_case(u)))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.join(",")))
        .collect();
    let sent = |name: &str| joined.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = match sent("x-amz-content-sha256") {
        Some(hash) => SignableBody::Precomputed(hash.to_owned()),
        None => SignableBody::UnsignedPayload,
    };
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
    let identity = key.identity();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&req.region)
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|_| ApiError::bad_request("the sign request cannot be signed"))?
        .into();
    let headers = joined.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let request = SignableRequest::new(&req.method, req.uri.as_str(), headers, body)
        .map_err(|_| ApiError::bad_request("the sign request's uri or headers are not valid"))?;
    let (instructions, _) =
        sign(request, &params).map_err(|_| ApiError::bad_request("the sign request cannot be signed"))?.into_parts();
    out.extend_from_slice(b"{\"uri\":");
    write_str(out, &req.uri);
    out.extend_from_slice(b",\"headers\":{");
    let mut first = true;
    for (name, value) in instructions.headers() {
        if sent(&name.to_ascii_lowercase()).is_some() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, name);
        out.push(b':');
        write_str_array(out, [value]);
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_and_resist_tampering() {
        let g = Grants::random();
        let mut out = Vec::new();
        g.mint("s3://b/wh/t", "token:a", 2000, &mut out);
        let grant = String::from_utf8(out).unwrap();
        assert!(grant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
        assert_eq!(g.check(&grant, "token:a", 1999).as_deref(), Some("s3://b/wh/t"));
        assert_eq!(g.check(&grant, "token:a", 2000), None, "expired");
        assert_eq!(g.check(&grant, "token:b", 1), None, "another principal");
        assert_eq!(g.check(&grant, "", 1), None, "no principal");
        assert_eq!(Grants::random().check(&grant, "token:a", 1), None, "another process's key");
        let (_, tag) = grant.split_once('.').unwrap();
        let mut wider = Vec::from(2000u64.to_be_bytes());
        wider.extend_from_slice(&7u16.to_be_bytes());
        wider.extend_from_slice(b"token:as3://b/wh");
        assert_eq!(g.check(&format!("{}.{tag}", B64.encode(&wider)), "token:a", 1), None);
        assert_eq!(g.check("junk", "", 1), None);
        let mut anonymous = Vec::new();
        g.mint("s3://b/wh/t", "", 2000, &mut anonymous);
        assert_eq!(g.check(std::str::from_utf8(&anonymous).unwrap(), "", 1).as_deref(), Some("s3://b/wh/t"));
    }

    #[test]
    fn nodes_with_the_same_secrets_check_each_others_grants() {
        let mut out = Vec::new();
        Grants::from_secrets(["s1", "s2"]).mint("s3://b/wh/t", "", 2000, &mut out);
        let grant = String::from_utf8(out).unwrap();
        assert_eq!(Grants::from_secrets(["s1", "s2"]).check(&grant, "", 1).as_deref(), Some("s3://b/wh/t"));
        assert_eq!(Grants::from_secrets(["s1", "s3"]).check(&grant, "", 1), None, "other secrets");
        assert_eq!(Grants::from_secrets(["s1s", "2"]).check(&grant, "", 1), None, "secrets are length-prefixed");
        assert_eq!(Grants::from_secrets([]).check(&grant, "", 1), None, "no secret: a random key");
    }

    #[test]
    fn targets_must_lie_under_the_location() {
        let a = Bump::new();
        let loc = "s3://bkt/wh/ns/t1";
        let ok = |uri: &str, m: &str| check_target(uri, m, loc, &a).is_ok();
        assert!(ok("http://127.0.0.1:5000/bkt/wh/ns/t1/data/x.parquet", "PUT"));
        assert!(ok("https://bkt.s3.us-east-1.amazonaws.com/wh/ns/t1/metadata/m.avro?x-id=GetObject", "GET"));
        assert!(ok("http://127.0.0.1:5000/bkt/wh/ns/t1/a%20b.parquet", "GET"));
        assert!(ok("http://127.0.0.1:5000/bkt?list-type=2&prefix=wh%2Fns%2Ft1%2Fdata%2F", "GET"));
        // Another table, a sibling sharing the name's start, the bucket, escapes.
        assert!(!ok("http://127.0.0.1:5000/bkt/wh/ns/t2/data/x.parquet", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt/wh/ns/t10/data/x.parquet", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt/wh/ns/t1", "GET"));
        assert!(!ok("http://127.0.0.1:5000/other/wh/ns/t1/x", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt/wh/ns/t1/../t2/x", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt/wh/ns/t1/%2E%2E/t2/x", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt?list-type=2&prefix=wh%2Fns%2Ft", "GET"));
        assert!(!ok("http://127.0.0.1:5000/bkt?delete", "POST"));
        assert!(!ok("http://127.0.0.1:5000/bkt", "GET"));
        assert!(!ok("not a uri", "GET"));
    }

    #[test]
    fn signs_with_the_server_key_and_adds_only_new_headers() {
        let key = ServerKey {
            access_key_id: "AKID".into(),
            secret_access_key: "s".into(),
            session_token: Some("tok".into()),
        };
        let body = br#"{"region":"us-east-1","method":"PUT","uri":"http://127.0.0.1:5000/b/wh/t/x",
            "headers":{"Content-Type":["text/plain"],"User-Agent":["botocore"]}}"#;
        let req: SignRequest = sonic_rs::from_slice(body).unwrap();
        let mut out = Vec::new();
        sign(&req, &key, SystemTime::UNIX_EPOCH, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["uri"], "http://127.0.0.1:5000/b/wh/t/x");
        let h = v["headers"].as_object().unwrap();
        let auth = h["authorization"][0].as_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/19700101/us-east-1/s3/aws4_request"), "{auth}");
        assert!(auth.contains("content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token"), "{auth}");
        assert_eq!(h["x-amz-content-sha256"][0], "UNSIGNED-PAYLOAD");
        assert_eq!(h["x-amz-security-token"][0], "tok");
        assert!(!h.contains_key("content-type"), "headers the client sent are not repeated");
    }
}
