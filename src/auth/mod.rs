//! Authentication: the OAuth2 client-credentials token endpoint
//! (`POST /v1/oauth/tokens`), Bingsan's own stateless HMAC tokens, JWTs of
//! an external identity provider, and the bearer check every catalog request
//! passes when `--auth` is on. See `docs/security.md`.
//!
//! Built once at start-up ([`Authenticator::from_args`]) and shared by every
//! shard through `Shared`: it is read-only, so checking a token takes no
//! lock, touches no store, and (for Bingsan's own tokens and ES256 JWTs)
//! allocates nothing.

pub mod clients;
pub mod form;
mod json;
pub mod jwt;
pub mod token;

use std::borrow::Cow;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bumpalo::Bump;

use crate::config::ServeArgs;
use crate::error::{ApiError, ErrorKind};
use crate::http::{Request, Response};
use crate::pool::BufPool;
use crate::routes::Operation;
use clients::Clients;
use form::Grant;
use jwt::JwtVerifier;
use token::TokenKeys;

/// Who may do what: built from the `--auth*` flags.
pub struct Authenticator {
    /// `--auth`: catalog routes need a valid bearer token.
    required: bool,
    /// Signs and checks Bingsan's own tokens.
    tokens: Option<TokenKeys>,
    /// Clients that may ask for tokens; `None`: the token endpoint is off.
    clients: Option<Arc<Clients>>,
    /// External identity provider.
    jwt: Option<JwtVerifier>,
    /// Lifetime of issued tokens, seconds.
    ttl: u64,
    /// How long refreshes may extend a session without credentials, seconds.
    max_session: u64,
}

/// Why a bearer check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Malformed, forged, signed by an unknown key, wrong issuer or audience.
    Invalid(&'static str),
    /// Past its expiry.
    Expired,
}

impl Denied {
    /// The 401 answer: an ErrorModel body and a Bearer challenge (RFC 6750).
    pub fn write(self, resp: &mut Response) {
        let (message, challenge): (&'static str, &'static str) = match self {
            Denied::Missing => ("Authorization: Bearer token required", "Bearer realm=\"bingsan\""),
            Denied::Invalid(_) => (
                "invalid access token",
                "Bearer realm=\"bingsan\", error=\"invalid_token\", error_description=\"invalid access token\"",
            ),
            Denied::Expired => (
                "access token expired",
                "Bearer realm=\"bingsan\", error=\"invalid_token\", error_description=\"access token expired\"",
            ),
        };
        resp.header("WWW-Authenticate", challenge.as_bytes());
        resp.error(&ApiError::new(ErrorKind::NotAuthorized, message));
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Authenticator {
    /// Nothing required, no token endpoint.
    pub fn off() -> Authenticator {
        Authenticator { required: false, tokens: None, clients: None, jwt: None, ttl: 3600, max_session: 86_400 }
    }

    /// From its parts (tests, embedding).
    pub fn new(
        required: bool,
        tokens: Option<TokenKeys>,
        clients: Option<Clients>,
        jwt: Option<JwtVerifier>,
        ttl: u64,
        max_session: u64,
    ) -> Authenticator {
        Authenticator { required, tokens, clients: clients.map(Arc::new), jwt, ttl, max_session }
    }

    /// Reads the clients, keys and JWKS the flags name. Errors are for the operator.
    pub fn from_args(args: &ServeArgs) -> Result<Authenticator, String> {
        if args.auth_token_ttl_secs == 0 {
            return Err("--auth-token-ttl-secs must be positive".into());
        }
        if args.auth_token_max_session_secs < args.auth_token_ttl_secs {
            return Err("--auth-token-max-session-secs must be at least --auth-token-ttl-secs".into());
        }
        let clients = match &args.auth_clients_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read --auth-clients-file {path:?}: {e}"))?;
                Some(Clients::parse(&text).map_err(|e| format!("--auth-clients-file {path:?}: {e}"))?)
            }
            None => None,
        };
        let tokens = match &args.auth_token_key_file {
            Some(path) => {
                let current = read_key(path, "--auth-token-key-file")?;
                let previous = match &args.auth_token_previous_key_file {
                    Some(p) => Some(read_key(p, "--auth-token-previous-key-file")?),
                    None => None,
                };
                Some(TokenKeys::new(&current, previous.as_deref())?)
            }
            None if clients.is_some() => {
                tracing::warn!(
                    "no --auth-token-key-file: signing tokens with a random key; tokens will not survive a restart \
                     and no other node accepts them"
                );
                Some(TokenKeys::random()?)
            }
            None => None,
        };
        let jwt = match (&args.auth_jwks_file, &args.auth_jwt_issuer, &args.auth_jwt_audience) {
            (Some(path), Some(iss), Some(aud)) => {
                let jwks = std::fs::read(path).map_err(|e| format!("cannot read --auth-jwks-file {path:?}: {e}"))?;
                let v = JwtVerifier::from_jwks(&jwks, iss, aud, args.auth_jwt_leeway_secs)
                    .map_err(|e| format!("--auth-jwks-file {path:?}: {e}"))?;
                Some(v)
            }
            (None, None, None) => None,
            _ => return Err("--auth-jwks-file, --auth-jwt-issuer and --auth-jwt-audience go together".into()),
        };
        if args.auth && tokens.is_none() && jwt.is_none() {
            return Err(
                "--auth needs a source of tokens: --auth-clients-file, --auth-token-key-file or --auth-jwks-file"
                    .into(),
            );
        }
        if !args.auth && (clients.is_some() || jwt.is_some()) {
            tracing::warn!("tokens are issued or accepted but not required: add --auth to require them");
        }
        tracing::info!(
            required = args.auth,
            token_endpoint = clients.is_some(),
            clients = clients.as_ref().map_or(0, Clients::len),
            token_ttl_secs = args.auth_token_ttl_secs,
            token_max_session_secs = args.auth_token_max_session_secs,
            token_key = if args.auth_token_key_file.is_some() {
                "file"
            } else if tokens.is_some() {
                "random"
            } else {
                "none"
            },
            previous_token_key = args.auth_token_previous_key_file.is_some(),
            jwks_keys = jwt.as_ref().map_or(0, JwtVerifier::key_count),
            "authentication"
        );
        Ok(Authenticator::new(
            args.auth,
            tokens,
            clients,
            jwt,
            args.auth_token_ttl_secs,
            args.auth_token_max_session_secs,
        ))
    }

    /// Whether catalog routes need a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The check at the top of request handling: `true` when the request is
    /// refused, `resp` then holds the 401. `op` is `None` when no route
    /// matched (refused too: without a token, nothing about the server is
    /// revealed). Allocates nothing.
    pub fn deny(&self, op: Option<Operation>, req: &Request<'_>, resp: &mut Response) -> bool {
        if !self.required || op.is_some_and(|op| op.spec().open) {
            return false;
        }
        let outcome = match req.header("authorization").and_then(form::bearer) {
            Some(token) => self.verify_bearer(token, now_secs()),
            None => Err(Denied::Missing),
        };
        match outcome {
            Ok(()) => false,
            Err(denied) => {
                tracing::debug!(method = req.method.as_str(), path = req.path, reason = ?denied, "unauthenticated request refused");
                denied.write(resp);
                true
            }
        }
    }

    /// Checks a bearer token at `now`: a Bingsan token (`payload.tag`) or a
    /// JWT (`header.payload.signature`).
    pub fn verify_bearer(&self, token: &[u8], now: u64) -> Result<(), Denied> {
        match token.iter().filter(|&&b| b == b'.').count() {
            1 => {
                let keys = self.tokens.as_ref().ok_or(Denied::Invalid("no token key configured"))?;
                let mut buf = token::payload_buf();
                keys.verify(token, now, &mut buf).map(|_| ()).map_err(|r| match r {
                    token::Rejected::Expired => Denied::Expired,
                    token::Rejected::Malformed => Denied::Invalid("malformed token"),
                    token::Rejected::BadSignature => Denied::Invalid("bad token signature"),
                    token::Rejected::NotYetValid => Denied::Invalid("token issued in the future"),
                })
            }
            2 => {
                let jwt = self.jwt.as_ref().ok_or(Denied::Invalid("no JWKS configured"))?;
                jwt.verify(token, now).map_err(|r| match r {
                    jwt::Rejected::Expired => Denied::Expired,
                    jwt::Rejected::Malformed => Denied::Invalid("malformed JWT"),
                    jwt::Rejected::Unsupported => Denied::Invalid("unsupported JWT algorithm or header"),
                    jwt::Rejected::UnknownKey => Denied::Invalid("JWT signed by an unknown key"),
                    jwt::Rejected::BadSignature => Denied::Invalid("bad JWT signature"),
                    jwt::Rejected::NotYetValid => Denied::Invalid("JWT not valid yet"),
                    jwt::Rejected::WrongIssuer => Denied::Invalid("JWT from another issuer"),
                    jwt::Rejected::WrongAudience => Denied::Invalid("JWT for another audience"),
                })
            }
            _ => Err(Denied::Invalid("malformed token")),
        }
    }

    /// Who sent a request under `--auth`: `token:<client id>` for a token
    /// of this server, `jwt:<sub>` for a JWT (copied into `a`). `None`
    /// when auth is off, or the bearer token is missing or invalid (or a
    /// JWT has no `sub`): nothing to tell callers apart by.
    pub fn principal<'a>(&self, req: &Request<'_>, a: &'a Bump) -> Option<&'a str> {
        if !self.required {
            return None;
        }
        let token = req.header("authorization").and_then(form::bearer)?;
        self.verify_bearer(token, now_secs()).ok()?;
        if token.iter().filter(|&&b| b == b'.').count() == 1 {
            let mut buf = token::payload_buf();
            let claims = self.tokens.as_ref()?.open(token, &mut buf).ok()?;
            Some(bumpalo::format!(in a, "token:{}", claims.subject).into_bump_str())
        } else {
            let sub = std::str::from_utf8(jwt::subject(token, a)?).ok()?;
            Some(bumpalo::format!(in a, "jwt:{}", sub).into_bump_str())
        }
    }

    /// `POST /v1/oauth/tokens`: answers with an OAuthTokenResponse or an
    /// OAuthError. Checking a secret (PBKDF2) runs on the shard's blocking
    /// pool so the shard keeps serving meanwhile.
    pub async fn token_endpoint(&self, req: &Request<'_>, arena: &Bump, tokens: &Rc<BufPool>, resp: &mut Response) {
        resp.header("Cache-Control", b"no-store");
        resp.header("Pragma", b"no-cache");
        let now = now_secs();
        let mut token = tokens.get();
        match self.grant(req, arena, now, &mut token).await {
            Ok(expires_at) => {
                let out = &mut *resp.body;
                out.clear();
                out.extend_from_slice(b"{\"access_token\":\"");
                // base64url and '.' need no JSON escaping.
                out.extend_from_slice(&token);
                out.push(b'"');
                out.extend_from_slice(b",\"token_type\":\"bearer\",\"expires_in\":");
                crate::json::write_u64(out, expires_at.saturating_sub(now));
                out.extend_from_slice(b",\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\"}");
                resp.status = 200;
                resp.content_type = "application/json";
            }
            Err(e) => e.write(resp),
        }
    }

    /// A token and its expiry, or why not.
    async fn grant(&self, req: &Request<'_>, arena: &Bump, now: u64, token: &mut Vec<u8>) -> Result<u64, OAuthError> {
        let Some(clients) = &self.clients else {
            return Err(OAuthError::unsupported_grant_type("this server issues no tokens (no --auth-clients-file)"));
        };
        let r = form::token_request(req.header("content-type"), req.header("authorization"), req.body, arena)?;
        let client = match r.client {
            Some((id, secret)) => {
                let (clients, owned_id, secret) = (clients.clone(), id.to_string(), secret.to_string());
                // Tens to hundreds of ms of PBKDF2: long work (`background`).
                let ok = crate::background::run(move || clients.verify(&owned_id, &secret)).await;
                if !ok {
                    tracing::info!(client = ?id, basic = r.basic, "token refused: client authentication failed");
                    return Err(OAuthError::invalid_client("client authentication failed"));
                }
                Some(id)
            }
            None => None,
        };
        self.mint(r.grant, client, r.bearer, now, token)
    }

    /// The token for a request whose client credentials (if any) checked
    /// out: `client` is then the authenticated client id.
    fn mint(
        &self,
        grant: Grant<'_>,
        client: Option<&str>,
        bearer: Option<&[u8]>,
        now: u64,
        token: &mut Vec<u8>,
    ) -> Result<u64, OAuthError> {
        let (Some(clients), Some(keys)) = (&self.clients, &self.tokens) else {
            return Err(OAuthError::unsupported_grant_type("this server issues no tokens (no --auth-clients-file)"));
        };
        let mut buf = token::payload_buf();
        let (subject, issued_at, expires_at) = match (grant, client) {
            (Grant::ClientCredentials, Some(id)) => (id, now, now.saturating_add(self.ttl)),
            (Grant::ClientCredentials, None) => return Err(OAuthError::invalid_client("client credentials required")),
            // A refresh with credentials: a new session, for the same client.
            (Grant::Refresh { subject_token }, Some(id)) => {
                let claims = keys
                    .open(subject_token.as_bytes(), &mut buf)
                    .map_err(|_| OAuthError::invalid_grant("subject_token is not a token of this server"))?;
                if claims.subject != id {
                    return Err(OAuthError::invalid_grant("subject_token belongs to another client"));
                }
                (id, now, now.saturating_add(self.ttl))
            }
            // A refresh by the token alone: it must be valid, presented as the
            // bearer too, its client still configured, its session not too old.
            (Grant::Refresh { subject_token }, None) => {
                if bearer != Some(subject_token.as_bytes()) {
                    return Err(OAuthError::invalid_client(
                        "authenticate with client credentials, or with subject_token as the bearer token",
                    ));
                }
                let claims = keys.verify(subject_token.as_bytes(), now, &mut buf).map_err(|e| match e {
                    token::Rejected::Expired => OAuthError::invalid_grant("subject_token expired"),
                    _ => OAuthError::invalid_grant("subject_token is not a valid token of this server"),
                })?;
                if !clients.contains(claims.subject) {
                    return Err(OAuthError::invalid_grant("the client of subject_token is no longer configured"));
                }
                let session_end = claims.issued_at.saturating_add(self.max_session);
                if now >= session_end {
                    return Err(OAuthError::invalid_grant("session too old: authenticate with client credentials"));
                }
                (claims.subject, claims.issued_at, now.saturating_add(self.ttl).min(session_end))
            }
        };
        tracing::debug!(client = ?subject, refresh = matches!(grant, Grant::Refresh { .. }), "token issued");
        keys.issue_into(subject, issued_at, expires_at, token);
        Ok(expires_at)
    }

    /// Issues a token as the token endpoint would, for `subject` (tests, tools).
    pub fn issue_token(&self, subject: &str, now: u64) -> Option<String> {
        if subject.len() > token::MAX_SUBJECT {
            return None;
        }
        self.tokens.as_ref().map(|k| k.issue(subject, now, now.saturating_add(self.ttl)))
    }
}

/// A key file: its bytes are the key. Warns when others may read it.
fn read_key(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    let key = std::fs::read(path).map_err(|e| format!("cannot read {flag} {path:?}: {e}"))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = ?path, "{flag} is readable by other users: chmod 600 it");
        }
    }
    if key.len() < token::MIN_KEY_BYTES {
        return Err(format!(
            "{flag} {path:?}: a key needs at least {} bytes, the file has {}",
            token::MIN_KEY_BYTES,
            key.len()
        ));
    }
    Ok(key)
}

/// The token endpoint's error: the spec's OAuthError body, 400 or 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type`, ...
    pub error: &'static str,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError { status: 400, error: "invalid_request", description: description.into() }
    }

    /// 401: the client could not be authenticated.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError { status: 401, error: "invalid_client", description: description.into() }
    }

    pub fn unsupported_grant_type(description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError { status: 400, error: "unsupported_grant_type", description: description.into() }
    }

    /// 400: the grant (here: the subject token of a refresh) is not valid.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError { status: 400, error: "invalid_grant", description: description.into() }
    }

    /// `{"error","error_description"}`; a 401 challenges for Basic (RFC 6749 5.2).
    pub fn write(&self, resp: &mut Response) {
        if self.status == 401 {
            resp.header("WWW-Authenticate", b"Basic realm=\"bingsan\"");
        }
        resp.status = self.status;
        resp.content_type = "application/json";
        let out = &mut *resp.body;
        out.clear();
        out.extend_from_slice(b"{\"error\":\"");
        out.extend_from_slice(self.error.as_bytes());
        out.extend_from_slice(b"\",\"error_description\":");
        crate::json::write_str(out, &self.description);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    /// `mint` into a fresh buffer, as text.
    impl Authenticator {
        fn mint_text(
            &self,
            grant: Grant<'_>,
            client: Option<&str>,
            bearer: Option<&[u8]>,
            now: u64,
        ) -> Result<(String, u64), OAuthError> {
            let mut out = Vec::new();
            let expires_at = self.mint(grant, client, bearer, now, &mut out)?;
            Ok((String::from_utf8(out).expect("ASCII"), expires_at))
        }
    }

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn with_keys(jwt: Option<JwtVerifier>) -> Authenticator {
        Authenticator::new(true, Some(TokenKeys::new(&[7; 32], None).unwrap()), None, jwt, 600, 86_400)
    }

    #[test]
    fn bearer_tokens_of_both_kinds() {
        let s = jwt::tests::Signers::new();
        let v = JwtVerifier::from_jwks(s.jwks().as_bytes(), jwt::tests::ISS, jwt::tests::AUD, 0).unwrap();
        let auth = with_keys(Some(v));
        let own = auth.issue_token("spark", NOW).unwrap();
        assert_eq!(auth.verify_bearer(own.as_bytes(), NOW + 1), Ok(()));
        assert_eq!(auth.verify_bearer(own.as_bytes(), NOW + 600), Err(Denied::Expired));
        let jwt = s.sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &jwt::tests::claims(""));
        assert_eq!(auth.verify_bearer(jwt.as_bytes(), jwt::tests::NOW), Ok(()));
        assert_eq!(auth.verify_bearer(jwt.as_bytes(), jwt::tests::NOW + 300), Err(Denied::Expired));
        for bad in [&b""[..], b"x", b"a.b.c.d", b"a.b", b"a.b.c"] {
            assert!(matches!(auth.verify_bearer(bad, NOW), Err(Denied::Invalid(_))), "{bad:?}");
        }
        // No JWKS configured: a JWT is invalid, however well signed.
        assert!(matches!(with_keys(None).verify_bearer(jwt.as_bytes(), jwt::tests::NOW), Err(Denied::Invalid(_))));
        // No token key (JWT only): an HMAC-shaped token is invalid.
        let jwt_only = Authenticator::new(true, None, None, None, 600, 86_400);
        assert!(matches!(jwt_only.verify_bearer(own.as_bytes(), NOW), Err(Denied::Invalid(_))));
    }

    #[test]
    fn open_operations() {
        let open: Vec<Operation> = Operation::ALL.into_iter().filter(|op| op.spec().open).collect();
        assert_eq!(
            open,
            [
                Operation::GetToken,
                Operation::HealthLive,
                Operation::HealthReady,
                Operation::Metrics,
                Operation::HealthWritable
            ]
        );
    }

    /// A server with client "spark" (and the clients file Python makes).
    fn issuing(ttl: u64, max_session: u64) -> Authenticator {
        let mut hash = [0u8; 32];
        let salt = *b"0123456789abcdef";
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, 1.try_into().unwrap(), &salt, b"s", &mut hash);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let clients = Clients::parse(&format!("spark:{}:{}:1", hex(&salt), hex(&hash))).unwrap();
        Authenticator::new(true, Some(TokenKeys::new(&[7; 32], None).unwrap()), Some(clients), None, ttl, max_session)
    }

    #[test]
    fn client_credentials_grant() {
        let auth = issuing(600, 3600);
        let (t, exp) = auth.mint_text(Grant::ClientCredentials, Some("spark"), None, NOW).unwrap();
        assert_eq!(exp, NOW + 600);
        assert_eq!(auth.verify_bearer(t.as_bytes(), NOW + 599), Ok(()));
        assert_eq!(auth.mint_text(Grant::ClientCredentials, None, None, NOW).unwrap_err().error, "invalid_client");
        let off = Authenticator::new(true, Some(TokenKeys::new(&[7; 32], None).unwrap()), None, None, 600, 3600);
        assert_eq!(
            off.mint_text(Grant::ClientCredentials, Some("x"), None, NOW).unwrap_err().error,
            "unsupported_grant_type"
        );
    }

    #[test]
    fn refresh_by_bearer_keeps_the_session_start() {
        let auth = issuing(600, 1000);
        let (t0, _) = auth.mint_text(Grant::ClientCredentials, Some("spark"), None, NOW).unwrap();
        let refresh = |t: &str, now| auth.mint_text(Grant::Refresh { subject_token: t }, None, Some(t.as_bytes()), now);
        let (t1, exp1) = refresh(&t0, NOW + 500).unwrap();
        assert_eq!(exp1, NOW + 1000, "capped at the session end, not NOW + 500 + 600");
        let mut buf = token::payload_buf();
        assert_eq!(auth.tokens.as_ref().unwrap().verify(t1.as_bytes(), NOW + 500, &mut buf).unwrap().issued_at, NOW);
        // The session is over: credentials again.
        assert_eq!(refresh(&t1, NOW + 1000).unwrap_err().error, "invalid_grant");
        // Expired, forged, a JWT, or someone else's bearer: refused.
        assert_eq!(refresh(&t0, NOW + 600).unwrap_err().error, "invalid_grant");
        let forged = TokenKeys::new(&[8; 32], None).unwrap().issue("spark", NOW, NOW + 600);
        assert_eq!(refresh(&forged, NOW).unwrap_err().error, "invalid_grant");
        assert_eq!(refresh("a.b.c", NOW).unwrap_err().error, "invalid_grant");
        let other_bearer = auth.mint_text(Grant::Refresh { subject_token: &t0 }, None, Some(b"x.y"), NOW).unwrap_err();
        assert_eq!((other_bearer.status, other_bearer.error), (401, "invalid_client"));
        assert_eq!(auth.mint_text(Grant::Refresh { subject_token: &t0 }, None, None, NOW).unwrap_err().status, 401);
        // A token of a client that is no longer configured.
        let gone = auth.tokens.as_ref().unwrap().issue("removed", NOW, NOW + 600);
        assert_eq!(refresh(&gone, NOW).unwrap_err().error, "invalid_grant");
    }

    #[test]
    fn refresh_with_credentials_starts_a_new_session() {
        let auth = issuing(600, 1000);
        let (t0, _) = auth.mint_text(Grant::ClientCredentials, Some("spark"), None, NOW).unwrap();
        // Expired, and past the session: with credentials it is renewed.
        let (t1, exp) = auth.mint_text(Grant::Refresh { subject_token: &t0 }, Some("spark"), None, NOW + 5000).unwrap();
        assert_eq!(exp, NOW + 5600);
        assert_eq!(auth.verify_bearer(t1.as_bytes(), NOW + 5001), Ok(()));
        // Another client's token, or no token of ours.
        let err = auth.mint_text(Grant::Refresh { subject_token: &t0 }, Some("trino"), None, NOW).unwrap_err();
        assert_eq!(err.error, "invalid_grant");
        let err = auth.mint_text(Grant::Refresh { subject_token: "junk" }, Some("spark"), None, NOW).unwrap_err();
        assert_eq!(err.error, "invalid_grant");
    }

    fn header_block(resp: &Response) -> String {
        String::from_utf8(resp.extra_headers().to_vec()).unwrap()
    }

    #[test]
    fn oauth_error_body() {
        let mut resp = Response::new(crate::pool::PooledBuf::unpooled(64));
        OAuthError::invalid_client("client \"x\" failed").write(&mut resp);
        assert_eq!(resp.status, 401);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v, serde_json::json!({"error": "invalid_client", "error_description": "client \"x\" failed"}));
        assert!(header_block(&resp).contains("WWW-Authenticate: Basic realm=\"bingsan\"\r\n"));
        let mut resp = Response::new(crate::pool::PooledBuf::unpooled(64));
        OAuthError::unsupported_grant_type("no").write(&mut resp);
        assert_eq!((resp.status, header_block(&resp).as_str()), (400, ""));
        assert_eq!(OAuthError::invalid_request("x").status, 400);
    }

    #[test]
    fn denial_answers() {
        for (denied, challenge) in [
            (Denied::Missing, "Bearer realm=\"bingsan\"\r\n"),
            (
                Denied::Expired,
                "Bearer realm=\"bingsan\", error=\"invalid_token\", error_description=\"access token expired\"\r\n",
            ),
            (
                Denied::Invalid("x"),
                "Bearer realm=\"bingsan\", error=\"invalid_token\", error_description=\"invalid access token\"\r\n",
            ),
        ] {
            let mut resp = Response::new(crate::pool::PooledBuf::unpooled(64));
            denied.write(&mut resp);
            assert_eq!(resp.status, 401);
            assert_eq!(header_block(&resp), format!("WWW-Authenticate: {challenge}"));
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(v["error"]["type"], "NotAuthorizedException");
            assert_eq!(v["error"]["code"], 401);
        }
    }
}
