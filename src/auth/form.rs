//! The request side of authentication: the bearer token of a catalog
//! request, and the client-credentials token request (form body and HTTP
//! Basic client authentication, RFC 6749 4.4; RFC 8693 for refresh).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bumpalo::Bump;

use super::OAuthError;
use crate::http::percent::{decode, query_pairs};

/// The token of an `Authorization: Bearer <token>` header value (scheme
/// case-insensitive); `None` for another scheme or an empty token.
pub fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let rest = scheme(authorization, b"bearer")?;
    let token = rest.trim_ascii();
    (!token.is_empty() && !token.iter().any(|b| b.is_ascii_whitespace())).then_some(token)
}

/// What follows `scheme` and at least one space, if the value uses it.
fn scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let value = value.trim_ascii_start();
    let (name, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    name.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Client credentials from `Authorization: Basic base64(id:secret)`, taken
/// as sent (RFC 7617). RFC 6749 2.3.1 would have them form-encoded first,
/// but Iceberg's clients (Java `OAuth2Util.basicAuthHeaders`, PyIceberg's
/// `requests`) do not encode, and decoding would turn a `+` of a secret
/// into a space. `Ok(None)` when the header uses another scheme.
pub fn basic<'a>(authorization: &[u8], arena: &'a Bump) -> Result<Option<(&'a str, &'a str)>, OAuthError> {
    let Some(rest) = scheme(authorization, b"basic") else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed Basic authorization header");
    let raw = STANDARD.decode(rest.trim_ascii()).map_err(|_| bad())?;
    let raw = arena.alloc_slice_copy(&raw);
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((id, secret)))
}

/// The grant type of `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an access token (RFC 8693 3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant<'a> {
    /// `client_credentials`: a token for the authenticated client.
    ClientCredentials,
    /// Token exchange limited to refreshing: a new token for the subject of
    /// `subject_token` (how Iceberg's Java client refreshes).
    Refresh { subject_token: &'a str },
}

/// A token request, as the client sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    pub grant: Grant<'a>,
    /// `(client_id, client_secret)`, from HTTP Basic or the form. Always
    /// present for client credentials; optional for a refresh.
    pub client: Option<(&'a str, &'a str)>,
    /// The client authenticated with HTTP Basic.
    pub basic: bool,
    /// A bearer token in the Authorization header (a refresh may present
    /// the subject token that way instead of client credentials).
    pub bearer: Option<&'a [u8]>,
    pub scope: Option<&'a str>,
}

/// Parses and checks `POST /v1/oauth/tokens`: the content type, the form
/// body, the grant type, and at most one way of client authentication.
pub fn token_request<'a>(
    content_type: Option<&[u8]>,
    authorization: Option<&'a [u8]>,
    body: &'a [u8],
    arena: &'a Bump,
) -> Result<TokenRequest<'a>, OAuthError> {
    let form_type = content_type.is_some_and(|ct| {
        let media = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    });
    if !form_type {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    let body = std::str::from_utf8(body).map_err(|_| OAuthError::invalid_request("the form is not UTF-8"))?;
    let mut f = Fields::default();
    for (name, value) in query_pairs(body) {
        let name = decode(name, true, arena).map_err(|_| OAuthError::invalid_request("malformed form encoding"))?;
        let slot = match name {
            "grant_type" => &mut f.grant_type,
            "client_id" => &mut f.client_id,
            "client_secret" => &mut f.client_secret,
            "scope" => &mut f.scope,
            "subject_token" => &mut f.subject_token,
            "subject_token_type" => &mut f.subject_token_type,
            "actor_token" => &mut f.actor_token,
            "requested_token_type" => &mut f.requested_token_type,
            _ => continue,
        };
        if slot.is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
        *slot = Some(decode(value, true, arena).map_err(|_| OAuthError::invalid_request("malformed form encoding"))?);
    }
    let grant = match f.grant_type {
        None => return Err(OAuthError::invalid_request("missing grant_type")),
        Some("client_credentials") => Grant::ClientCredentials,
        Some(TOKEN_EXCHANGE) => {
            if f.actor_token.is_some() {
                return Err(OAuthError::invalid_request("delegation (actor_token) is not supported"));
            }
            if f.subject_token_type != Some(ACCESS_TOKEN_TYPE)
                || f.requested_token_type.is_some_and(|t| t != ACCESS_TOKEN_TYPE)
            {
                return Err(OAuthError::invalid_request(
                    "only access tokens are exchanged (subject_token_type and requested_token_type)",
                ));
            }
            let subject_token = f
                .subject_token
                .filter(|t| !t.is_empty())
                .ok_or(OAuthError::invalid_request("missing subject_token"))?;
            Grant::Refresh { subject_token }
        }
        Some(_) => {
            return Err(OAuthError::unsupported_grant_type(
                "only client_credentials and the refresh of an access token by token exchange are supported",
            ))
        }
    };
    let basic = match authorization {
        Some(h) => basic(h, arena)?,
        None => None,
    };
    let bearer = authorization.and_then(bearer);
    let (client, is_basic) = match (basic, f.client_id, f.client_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request("client credentials both in the Authorization header and the form"))
        }
        (Some((id, _)), Some(form_id), None) if form_id != id => {
            return Err(OAuthError::invalid_request("client_id differs from the Authorization header"))
        }
        (Some(pair), _, None) => (Some(pair), true),
        (None, Some(id), Some(secret)) => (Some((id, secret)), false),
        (None, None, None) if matches!(grant, Grant::Refresh { .. }) => (None, false),
        (None, _, _) => return Err(OAuthError::invalid_client("client_id and client_secret are required")),
    };
    Ok(TokenRequest { grant, client, basic: is_basic, bearer, scope: f.scope })
}

#[derive(Default)]
struct Fields<'a> {
    grant_type: Option<&'a str>,
    client_id: Option<&'a str>,
    client_secret: Option<&'a str>,
    scope: Option<&'a str>,
    subject_token: Option<&'a str>,
    subject_token_type: Option<&'a str>,
    actor_token: Option<&'a str>,
    requested_token_type: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    fn basic_header(id: &str, secret: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))).into_bytes()
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(b"Bearer abc.def"), Some(&b"abc.def"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER x"), Some(&b"x"[..]));
        for bad in [&b"Bearer"[..], b"Bearer ", b"Basic abc", b"Bearerabc", b"", b"Bearer a b", b"Token abc"] {
            assert_eq!(bearer(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn basic_header_parsing() {
        let a = Bump::new();
        assert_eq!(basic(&basic_header("id", "s3cr:et"), &a).unwrap(), Some(("id", "s3cr:et")));
        // Taken as sent, not form-decoded: Iceberg's clients do not encode.
        assert_eq!(basic(&basic_header("my%20id", "a%2Bb+c"), &a).unwrap(), Some(("my%20id", "a%2Bb+c")));
        assert_eq!(basic(b"basic   aWQ6cw==", &a).unwrap(), Some(("id", "s")));
        assert_eq!(basic(b"Bearer xyz", &a).unwrap(), None);
        for bad in [&b"Basic !!!"[..], b"Basic aWRz", b"Basic /w==", b"Basic "] {
            let e = basic(bad, &a).unwrap_err();
            assert_eq!((e.status, e.error), (401, "invalid_client"), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn form_credentials() {
        let a = Bump::new();
        let body = b"grant_type=client_credentials&client_id=cli%3Aent&client_secret=p%26ss+word&scope=catalog";
        let r = token_request(Some(FORM), None, body, &a).unwrap();
        assert_eq!(
            r,
            TokenRequest {
                grant: Grant::ClientCredentials,
                client: Some(("cli:ent", "p&ss word")),
                basic: false,
                bearer: None,
                scope: Some("catalog")
            }
        );
        // Content type parameters and case do not matter; unknown fields are ignored.
        let ct = b"Application/X-WWW-Form-Urlencoded; charset=UTF-8";
        let body = b"extra=1&client_secret=s&grant_type=client_credentials&client_id=c";
        assert_eq!(token_request(Some(ct), None, body, &a).unwrap().client, Some(("c", "s")));
    }

    #[test]
    fn basic_credentials() {
        let a = Bump::new();
        let h = basic_header("c", "s");
        let r = token_request(Some(FORM), Some(&h), b"grant_type=client_credentials", &a).unwrap();
        assert_eq!(
            (r.grant, r.client, r.basic, r.bearer, r.scope),
            (Grant::ClientCredentials, Some(("c", "s")), true, None, None)
        );
        // client_id may repeat the header's.
        let r = token_request(Some(FORM), Some(&h), b"grant_type=client_credentials&client_id=c", &a).unwrap();
        assert!(r.basic);
        // A bearer header on the token endpoint is not client authentication.
        let body = b"grant_type=client_credentials&client_id=c&client_secret=s";
        let r = token_request(Some(FORM), Some(b"Bearer t"), body, &a).unwrap();
        assert_eq!((r.basic, r.bearer), (false, Some(&b"t"[..])));
    }

    #[test]
    fn refresh_by_token_exchange() {
        let a = Bump::new();
        // As Iceberg's Java client refreshes: the current token as subject and as bearer.
        let body = b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&scope=catalog\
                     &subject_token=AAA.BBB&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
        let r = token_request(Some(FORM), Some(b"Bearer AAA.BBB"), body, &a).unwrap();
        assert_eq!(r.grant, Grant::Refresh { subject_token: "AAA.BBB" });
        assert_eq!((r.client, r.bearer), (None, Some(&b"AAA.BBB"[..])));
        // And once the token expired: with client credentials in Basic.
        let h = basic_header("c", "s");
        let r = token_request(Some(FORM), Some(&h), body, &a).unwrap();
        assert_eq!((r.client, r.basic), (Some(("c", "s")), true));
        // Without any client authentication: parsed, left to the caller to refuse.
        assert_eq!(token_request(Some(FORM), None, body, &a).unwrap().client, None);
        let exchange = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
        let access = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
        for bad in [
            format!("{exchange}&subject_token_type={access}"),
            format!("{exchange}&subject_token=&subject_token_type={access}"),
            format!("{exchange}&subject_token=t"),
            format!(
                "{exchange}&subject_token=t&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
            ),
            format!("{exchange}&subject_token=t&subject_token_type={access}&actor_token=x"),
            format!("{exchange}&subject_token=t&subject_token_type={access}&requested_token_type=x"),
        ] {
            let e = token_request(Some(FORM), None, bad.as_bytes(), &a).unwrap_err();
            assert_eq!((e.status, e.error), (400, "invalid_request"), "{bad}");
        }
    }

    #[test]
    fn bad_token_requests() {
        let a = Bump::new();
        let h = basic_header("c", "s");
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [u8], u16, &'a str);
        let cases: &[Case] = &[
            (Some(b"application/json"), None, b"{}", 400, "invalid_request"),
            (None, None, b"grant_type=client_credentials", 400, "invalid_request"),
            (Some(FORM), None, b"client_id=c&client_secret=s", 400, "invalid_request"),
            (Some(FORM), None, b"grant_type=password&client_id=c&client_secret=s", 400, "unsupported_grant_type"),
            (Some(FORM), None, b"grant_type=refresh_token&refresh_token=x", 400, "unsupported_grant_type"),
            (Some(FORM), None, b"grant_type=client_credentials&grant_type=client_credentials", 400, "invalid_request"),
            (Some(FORM), None, b"grant_type=client_credentials&client_id=%zz", 400, "invalid_request"),
            (Some(FORM), None, b"grant_type=client_credentials", 401, "invalid_client"),
            (Some(FORM), None, b"grant_type=client_credentials&client_id=c", 401, "invalid_client"),
            (Some(FORM), None, b"grant_type=client_credentials&client_secret=s", 401, "invalid_client"),
            (Some(FORM), Some(&h), b"grant_type=client_credentials&client_secret=s", 400, "invalid_request"),
            (Some(FORM), Some(&h), b"grant_type=client_credentials&client_id=other", 400, "invalid_request"),
            (Some(FORM), None, b"grant_type=client_credentials&client_id=c&client_secret=\xff", 400, "invalid_request"),
        ];
        for (ct, auth, body, status, error) in cases {
            let e = token_request(*ct, *auth, body, &a).unwrap_err();
            assert_eq!((e.status, e.error), (*status, *error), "{:?}", String::from_utf8_lossy(body));
        }
    }
}
