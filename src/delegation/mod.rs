//! Access delegation (`X-Iceberg-Access-Delegation`): what a client with
//! no storage credentials of its own gets to reach a table's files in an
//! S3 warehouse.
//!
//! - `vended-credentials`: short-lived keys from STS `AssumeRole` with an
//!   inline session policy limited to the table's location (`policy.rs`,
//!   `sts.rs`), cached per shard until shortly before they expire
//!   (`cache.rs`), in the answer's `config` and `storage-credentials`.
//! - `remote-signing`: the client sends each S3 request to
//!   `POST /v1/aws/s3/sign`, which signs it with the server's credentials
//!   only for objects under a location the client was granted by a load
//!   (`signer.rs`).
//!
//! Loads, creates and registers write their `LoadTableResult` with an empty
//! `config`; the service fills it here afterwards (after any idempotency
//! record was sealed, so no secret is ever stored).

pub mod cache;
pub mod keys;
pub mod policy;
pub mod signer;
pub mod sts;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::fileio::IoThread;
use crate::json::write_str;
use crate::metrics::DELEGATION;
use crate::warehouse::{Delegation as WarehouseDelegation, ServerCredentials, Warehouse};
use keys::ServerKeys;
use signer::Grants;
use sts::{AssumeRole, ServerKey, StsError, Vended};

/// How long vended credentials live (STS allows 900 s to the role's maximum).
pub const VEND_SECS: u32 = 3600;

/// How long the STS call may take, connection included.
pub const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// What a warehouse gives clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Vended,
    RemoteSigning,
}

/// The modes a request asked for: the header is a comma-separated list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub vended: bool,
    pub remote_signing: bool,
}

impl Requested {
    pub fn from_header(value: Option<&[u8]>) -> Requested {
        let mut r = Requested::default();
        for mode in value.unwrap_or_default().split(|&b| b == b',') {
            match mode.trim_ascii() {
                m if m.eq_ignore_ascii_case(b"vended-credentials") => r.vended = true,
                m if m.eq_ignore_ascii_case(b"remote-signing") => r.remote_signing = true,
                _ => {}
            }
        }
        r
    }

    pub fn any(self) -> bool {
        self.vended || self.remote_signing
    }

    fn allows(self, mode: Mode) -> bool {
        match mode {
            Mode::Vended => self.vended,
            Mode::RemoteSigning => self.remote_signing,
        }
    }
}

/// One S3 warehouse that delegates access.
pub struct Target {
    /// `s3://bucket[/prefix]`, without a trailing `/`.
    pub root: String,
    pub mode: Mode,
    pub region: String,
    /// The client properties of the warehouse (`s3.endpoint`, ...), as
    /// JSON members, each followed by a comma.
    props: Vec<u8>,
    /// The server's own keys (signing the STS call and remote signing).
    pub keys: ServerKeys,
    pub sts_role_arn: Option<String>,
    /// `http(s)://host[:port]/`.
    pub sts_endpoint: String,
}

impl Target {
    /// `props`: the client properties (`s3.endpoint`, `s3.region`, ...).
    pub fn new(
        root: &str,
        mode: Mode,
        region: &str,
        props: &[(&str, String)],
        keys: ServerKeys,
        sts_role_arn: Option<String>,
        sts_endpoint: Option<&str>,
    ) -> Target {
        let mut p = Vec::new();
        for (k, v) in props {
            write_str(&mut p, k);
            p.push(b':');
            write_str(&mut p, v);
            p.push(b',');
        }
        let sts_endpoint = match sts_endpoint {
            Some(e) if e.ends_with('/') => e.to_owned(),
            Some(e) => format!("{e}/"),
            None => format!("https://sts.{region}.amazonaws.com/"),
        };
        Target {
            root: root.trim_end_matches('/').to_owned(),
            mode,
            region: region.to_owned(),
            props: p,
            keys,
            sts_role_arn,
            sts_endpoint,
        }
    }

    fn contains(&self, location: &str) -> bool {
        location.strip_prefix(self.root.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The process's delegation settings, shared by every shard.
pub struct Delegation {
    targets: Vec<Target>,
    pub grants: Grants,
    /// The catalog serves HTTPS (the scheme of `s3.signer.uri`).
    pub https: bool,
}

impl Delegation {
    pub fn new(targets: Vec<Target>) -> Delegation {
        let signing = || targets.iter().filter(|t| t.mode == Mode::RemoteSigning);
        let grants = if signing().all(|t| matches!(t.keys, ServerKeys::Static(_))) {
            Grants::from_secrets(signing().filter_map(|t| match &t.keys {
                ServerKeys::Static(key) => Some(key.secret_access_key.as_str()),
                ServerKeys::Chain { .. } => None,
            }))
        } else {
            tracing::warn!(
                "a remote-signing warehouse signs with keys from the AWS chain: its grants hold on this process \
                 only (behind a load balancer, a client's sign request must reach the node it loaded from)"
            );
            Grants::random()
        };
        Delegation { targets, grants, https: false }
    }

    /// The delegating S3 warehouses of `warehouses`. Server keys from the
    /// AWS chain are resolved by `object_store`'s provider on a
    /// `bingsan-s3-keys` thread, started when a warehouse needs it.
    pub fn from_warehouses(warehouses: &[Warehouse], https: bool) -> Result<Delegation, String> {
        let mut targets = Vec::new();
        let mut io: Option<IoThread> = None;
        for w in warehouses {
            let Some(s3) = &w.s3 else { continue };
            let mode = match s3.delegation {
                WarehouseDelegation::None => continue,
                WarehouseDelegation::Vended => Mode::Vended,
                WarehouseDelegation::RemoteSigning => Mode::RemoteSigning,
            };
            let keys = match s3.credentials.static_keys().map_err(|e| format!("warehouse {:?}: {e}", w.name))? {
                Some(k) => ServerKeys::Static(Arc::new(ServerKey {
                    access_key_id: k.access_key_id,
                    secret_access_key: k.secret_access_key,
                    session_token: k.session_token,
                })),
                None => {
                    debug_assert_eq!(s3.credentials, ServerCredentials::Chain);
                    let io = match &io {
                        Some(io) => io.clone(),
                        None => io
                            .insert(
                                IoThread::start("bingsan-s3-keys")
                                    .map_err(|e| format!("cannot start the credentials thread: {e}"))?,
                            )
                            .clone(),
                    };
                    ServerKeys::Chain { provider: crate::fileio::chain_provider(&w.root, s3)?, io }
                }
            };
            let props = w.client_properties();
            targets.push(Target::new(
                &w.root,
                mode,
                &s3.region,
                &props,
                keys,
                s3.sts_role_arn.clone(),
                s3.sts_endpoint.as_deref(),
            ));
        }
        Ok(Delegation { https, ..Delegation::new(targets) })
    }

    /// Whether any warehouse delegates (else the header is ignored at once).
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The delegating warehouse holding `location` whose mode `req` asked for.
    pub fn target(&self, location: &str, req: Requested) -> Option<&Target> {
        self.targets.iter().filter(|t| t.contains(location)).max_by_key(|t| t.root.len()).filter(|t| req.allows(t.mode))
    }

    /// Any delegating warehouse holding `location`, whatever its mode.
    pub fn holding(&self, location: &str) -> Option<&Target> {
        self.targets.iter().filter(|t| t.contains(location)).max_by_key(|t| t.root.len())
    }
}

/// Calls STS for credentials scoped to `location`, signed with `key`.
/// Blocking, with a bounded timeout: run it off the shard (glommio's
/// blocking pool).
pub fn vend_blocking(target: &Target, key: &ServerKey, location: &str) -> Result<Vended, StsError> {
    let (bucket, prefix) = policy::split_s3(location).ok_or_else(|| StsError::Refused("NotAnS3Location".into()))?;
    let policy =
        policy::session_policy(bucket, prefix).ok_or_else(|| StsError::Refused("WildcardInLocation".into()))?;
    let role = target.sts_role_arn.as_deref().ok_or_else(|| StsError::Refused("NoRoleConfigured".into()))?;
    let call = AssumeRole {
        role_arn: role,
        session_name: "bingsan",
        external_id: None,
        policy: &policy,
        duration_secs: VEND_SECS,
    };
    let signed = call
        .sign(&target.sts_endpoint, &target.region, key, SystemTime::now())
        .map_err(|_| StsError::Refused("SigningFailed".into()))?;
    let result = send(&target.sts_endpoint, &signed);
    let counter = match &result {
        Ok(_) => &DELEGATION.sts_ok,
        Err(StsError::Refused(_)) => &DELEGATION.sts_refused,
        Err(StsError::Unreachable(_)) => &DELEGATION.sts_unreachable,
        Err(StsError::Malformed) => &DELEGATION.sts_malformed,
    };
    counter.fetch_add(1, Relaxed);
    result
}

/// Sends a signed STS call and reads its answer, within [`STS_TIMEOUT`].
fn send(endpoint: &str, signed: &sts::Signed) -> Result<Vended, StsError> {
    let agent = ureq::AgentBuilder::new().timeout(STS_TIMEOUT).redirects(0).build();
    let mut request = agent.post(endpoint);
    for (k, v) in &signed.headers {
        request = request.set(k, v);
    }
    let text = match request.send_string(&signed.body) {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            resp.into_string().map_err(|e| StsError::Unreachable(e.kind().to_string()))?
        }
        Err(ureq::Error::Transport(t)) => return Err(StsError::Unreachable(t.kind().to_string())),
    };
    sts::parse_response(&text)
}

/// Writes the `config` members of vended credentials (no surrounding braces).
pub fn write_vended(out: &mut Vec<u8>, target: &Target, v: &Vended) {
    out.extend_from_slice(&target.props);
    out.extend_from_slice(b"\"s3.access-key-id\":");
    write_str(out, &v.access_key_id);
    out.extend_from_slice(b",\"s3.secret-access-key\":");
    write_str(out, &v.secret_access_key);
    out.extend_from_slice(b",\"s3.session-token\":");
    write_str(out, &v.session_token);
    out.extend_from_slice(b",\"s3.session-token-expires-at-ms\":\"");
    crate::json::write_u64(out, v.expires_at_ms);
    out.push(b'"');
}

/// Writes the `config` members of remote signing: the signer (`signer_uri`,
/// the server as the client reached it) and an endpoint carrying the grant
/// of `location` to `principal`.
pub fn write_signing(
    out: &mut Vec<u8>,
    target: &Target,
    grants: &Grants,
    signer_uri: Option<&str>,
    location: &str,
    principal: &str,
) {
    out.extend_from_slice(&target.props);
    out.extend_from_slice(b"\"s3.remote-signing-enabled\":\"true\",\"s3.signer\":\"S3V4RestSigner\",");
    if let Some(uri) = signer_uri {
        out.extend_from_slice(b"\"s3.signer.uri\":");
        write_str(out, uri);
        out.push(b',');
    }
    let expires =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + signer::GRANT_SECS;
    out.extend_from_slice(b"\"s3.signer.endpoint\":\"");
    out.extend_from_slice(signer::SIGN_PATH.as_bytes());
    out.extend_from_slice(b"?grant=");
    grants.mint(location, principal, expires, out);
    out.push(b'"');
}

/// The tail every `LoadTableResult` the catalog writes ends with.
const EMPTY_CONFIG: &[u8] = b"\"config\":{}}";

/// Fills the empty `config` ending a `LoadTableResult` with `members`, and
/// adds the same as `storage-credentials` for `prefix` when `storage`.
pub fn fill_load_result(out: &mut Vec<u8>, prefix: &str, storage: bool, members: impl Fn(&mut Vec<u8>)) {
    if !out.ends_with(EMPTY_CONFIG) {
        debug_assert!(false, "a LoadTableResult ends with an empty config");
        return;
    }
    out.truncate(out.len() - 2);
    members(out);
    out.push(b'}');
    if storage {
        out.extend_from_slice(b",\"storage-credentials\":");
        write_storage_credentials(out, prefix, members);
    }
    out.push(b'}');
}

/// `[{"prefix":...,"config":{members}}]`.
pub fn write_storage_credentials(out: &mut Vec<u8>, prefix: &str, members: impl Fn(&mut Vec<u8>)) {
    out.extend_from_slice(b"[{\"prefix\":");
    write_str(out, prefix);
    out.extend_from_slice(b",\"config\":{");
    members(out);
    out.extend_from_slice(b"}}]");
}

/// The table location (`metadata.location`) of a `LoadTableResult` body
/// as `write_load_result` lays it out, copied into the request's arena: a
/// byte walk, because a JSON parser's scratch buffer would be a heap
/// allocation on every hot load. A location with escapes is read by the
/// parser instead.
pub fn result_location<'a>(body: &[u8], a: &'a bumpalo::Bump) -> Option<&'a str> {
    // The metadata follows the metadata location, a string whose quotes are escaped.
    const MARK: &[u8] = b",\"metadata\":";
    let start = body.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    match member_str(&body[start..], b"location") {
        Some(Ok(s)) => Some(a.alloc_str(s)),
        Some(Err(())) => {
            let v = sonic_rs::get(body, ["metadata", "location"]).ok()?;
            Some(a.alloc_str(&sonic_rs::from_str::<String>(v.as_raw_str()).ok()?))
        }
        None => None,
    }
}

/// The string member `key` of the JSON object `json` starts with: `Ok`
/// when it has no escapes, `Err` when it has (or is not valid UTF-8).
fn member_str<'a>(json: &'a [u8], key: &[u8]) -> Option<Result<&'a str, ()>> {
    // The index of the quote closing the string whose content starts at `i`.
    let close = |mut i: usize| -> Option<usize> {
        while i < json.len() {
            match json[i] {
                b'\\' => i += 2,
                b'"' => return Some(i),
                _ => i += 1,
            }
        }
        None
    };
    let skip_ws = |mut i: usize| {
        while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let (mut depth, mut i) = (0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'"' => {
                let end = close(i + 1)?;
                let after = skip_ws(end + 1);
                if depth == 1 && json.get(after) == Some(&b':') && &json[i + 1..end] == key {
                    let v = skip_ws(after + 1);
                    if json.get(v) != Some(&b'"') {
                        return None;
                    }
                    let value = &json[v + 1..close(v + 1)?];
                    return Some(if value.contains(&b'\\') {
                        Err(())
                    } else {
                        std::str::from_utf8(value).map_err(drop)
                    });
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(mode: Mode) -> Target {
        let key = ServerKeys::Static(Arc::new(ServerKey {
            access_key_id: "AKID".into(),
            secret_access_key: "s".into(),
            session_token: None,
        }));
        let props = [("s3.endpoint", "http://127.0.0.1:1".to_owned()), ("s3.region", "us-east-1".to_owned())];
        Target::new("s3://bkt/wh/", mode, "us-east-1", &props, key, Some("arn:aws:iam::1:role/r".into()), None)
    }

    #[test]
    fn finds_the_top_level_location() {
        let a = bumpalo::Bump::new();
        let body =
            |md: &str| format!(r#"{{"metadata-location":"s3://b/x,\"metadata\":","metadata":{md},"config":{{}}}}"#);
        let nested = r#"{"properties":{"location":"no"},"schemas":[{"location":"no"}],"location" : "s3://b/t","x":1}"#;
        assert_eq!(result_location(body(nested).as_bytes(), &a), Some("s3://b/t"));
        let escaped = r#"{"location":"s3://b/a\"b"}"#;
        assert_eq!(result_location(body(escaped).as_bytes(), &a), Some("s3://b/a\"b"));
        assert_eq!(result_location(body(r#"{"location":3}"#).as_bytes(), &a), None);
        assert_eq!(result_location(body(r#"{"other":"s3://b/t"}"#).as_bytes(), &a), None);
        assert_eq!(result_location(b"{}", &a), None);
    }

    #[test]
    fn header_lists_modes() {
        assert_eq!(Requested::from_header(None), Requested::default());
        let both = Requested::from_header(Some(b"vended-credentials, Remote-Signing"));
        assert!(both.vended && both.remote_signing);
        assert!(!Requested::from_header(Some(b"unknown")).any());
    }

    #[test]
    fn targets_match_by_root_and_mode() {
        let d = Delegation::new(vec![target(Mode::Vended)]);
        let vended = Requested { vended: true, remote_signing: false };
        assert!(d.target("s3://bkt/wh/ns/t", vended).is_some());
        assert!(d.target("s3://bkt/wh2/t", vended).is_none());
        assert!(d.target("s3://bkt/wh/ns/t", Requested { vended: false, remote_signing: true }).is_none());
        assert_eq!(d.targets[0].sts_endpoint, "https://sts.us-east-1.amazonaws.com/");
    }

    #[test]
    fn fills_a_load_result() {
        let t = target(Mode::Vended);
        let v = Vended {
            access_key_id: "ASIA".into(),
            secret_access_key: "sec".into(),
            session_token: "tok".into(),
            expires_at_ms: 42,
        };
        let mut out = br#"{"metadata-location":"s3://bkt/wh/t/metadata/1.json","metadata":{"location":"s3://bkt/wh/t"},"config":{}}"#.to_vec();
        assert_eq!(result_location(&out, &bumpalo::Bump::new()), Some("s3://bkt/wh/t"));
        fill_load_result(&mut out, "s3://bkt/wh/t", true, |o| write_vended(o, &t, &v));
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["config"]["s3.access-key-id"], "ASIA");
        assert_eq!(j["config"]["s3.session-token-expires-at-ms"], "42");
        assert_eq!(j["config"]["s3.endpoint"], "http://127.0.0.1:1");
        assert_eq!(j["storage-credentials"][0]["prefix"], "s3://bkt/wh/t");
        assert_eq!(j["storage-credentials"][0]["config"]["s3.secret-access-key"], "sec");
    }

    #[test]
    fn signing_config_carries_a_grant_for_the_location() {
        let t = target(Mode::RemoteSigning);
        let d = Delegation::new(vec![]);
        let mut out = br#"{"metadata":{"location":"s3://bkt/wh/t"},"config":{}}"#.to_vec();
        fill_load_result(&mut out, "s3://bkt/wh/t", false, |o| {
            write_signing(o, &t, &d.grants, Some("http://h:1"), "s3://bkt/wh/t", "token:a")
        });
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["config"]["s3.remote-signing-enabled"], "true");
        assert_eq!(j["config"]["s3.signer.uri"], "http://h:1");
        let endpoint = j["config"]["s3.signer.endpoint"].as_str().unwrap();
        let grant = endpoint.strip_prefix("v1/aws/s3/sign?grant=").unwrap();
        assert_eq!(d.grants.check(grant, "token:a", 0).as_deref(), Some("s3://bkt/wh/t"));
        assert_eq!(d.grants.check(grant, "", 0), None);
        assert!(j.get("storage-credentials").is_none());
    }
}
