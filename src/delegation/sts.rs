//! STS `AssumeRole` over the Query API: the form body, its SigV4
//! signature (`aws-sigv4`), and the XML answer. No SDK: one signed POST is
//! all vending needs, and the request goes out on the I/O runtime.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters kept as they are in a form value (RFC 3986 unreserved).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Short-lived credentials from STS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vended {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they expire, in milliseconds since the epoch.
    pub expires_at_ms: u64,
}

/// The server's own credentials, which sign the STS call (and remote
/// signing answers).
#[derive(Clone)]
pub struct ServerKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl ServerKey {
    pub(crate) fn identity(&self) -> aws_smithy_runtime_api::client::identity::Identity {
        Credentials::new(&self.access_key_id, &self.secret_access_key, self.session_token.clone(), None, "bingsan")
            .into()
    }
}

/// One `AssumeRole` call.
pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub external_id: Option<&'a str>,
    /// The inline session policy (JSON).
    pub policy: &'a str,
    pub duration_secs: u32,
}

/// A signed request, ready to send: `POST endpoint` with these headers.
#[derive(Debug)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Why a vend failed, in words safe for a client (no secrets, no bodies).
#[derive(Debug, PartialEq, Eq)]
pub enum StsError {
    /// STS answered an error: its code (`AccessDenied`, ...).
    Refused(String),
    /// The answer was not an `AssumeRoleResponse` with credentials.
    Malformed,
    /// No answer in time, or a connection failure.
    Unreachable(String),
}

impl std::fmt::Display for StsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StsError::Refused(code) => write!(f, "STS refused AssumeRole: {code}"),
            StsError::Malformed => f.write_str("STS answered something other than credentials"),
            StsError::Unreachable(why) => write!(f, "STS unreachable: {why}"),
        }
    }
}

impl AssumeRole<'_> {
    /// The form body of the Query API call.
    pub fn body(&self) -> String {
        let mut body = String::from("Action=AssumeRole&Version=2011-06-15");
        let mut param = |k: &str, v: &str| {
            body.push('&');
            body.push_str(k);
            body.push('=');
            body.extend(utf8_percent_encode(v, FORM));
        };
        param("RoleArn", self.role_arn);
        param("RoleSessionName", self.session_name);
        param("DurationSeconds", &self.duration_secs.to_string());
        param("Policy", self.policy);
        if let Some(id) = self.external_id {
            param("ExternalId", id);
        }
        body
    }

    /// The call signed with `key` for `endpoint` (an `http(s)://host[:port]/` URL).
    pub fn sign(&self, endpoint: &str, region: &str, key: &ServerKey, now: SystemTime) -> Result<Signed, String> {
        let body = self.body();
        let host = endpoint.split_once("://").map_or(endpoint, |(_, r)| r).split('/').next().unwrap_or_default();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity = key.identity();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("sts")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers = [("host", host), ("content-type", content_type)];
        let request = SignableRequest::new("POST", endpoint, headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
            .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
        let mut out: Vec<(String, String)> = vec![("content-type".into(), content_type.into())];
        out.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
        Ok(Signed { headers: out, body })
    }
}

/// Reads an `AssumeRoleResponse` (or an `ErrorResponse`).
pub fn parse_response(xml: &str) -> Result<Vended, StsError> {
    if let Some(code) = element(xml, "Code").filter(|_| element(xml, "Credentials").is_none()) {
        return Err(StsError::Refused(code.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect()));
    }
    let creds = element(xml, "Credentials").ok_or(StsError::Malformed)?;
    let field = |name| element(creds, name).map(unescape).filter(|v| !v.is_empty()).ok_or(StsError::Malformed);
    Ok(Vended {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("SessionToken")?,
        expires_at_ms: element(creds, "Expiration").and_then(rfc3339_ms).ok_or(StsError::Malformed)?,
    })
}

/// The text of the first `<name>...</name>` (no attributes in STS answers).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim())
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// `2026-12-03T14:05:00Z` (fractional seconds and offsets `+hh:mm` too) in
/// milliseconds since the epoch.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let frac = &s[i + 1..i + 1 + digits];
        ms = format!("{frac:0<3}")[..3].parse().ok()?;
        i += 1 + digits;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let v = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to y-mo-d (proleptic Gregorian, H. Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalr/K7&amp;MDENG</SecretAccessKey>
      <SessionToken>FQoGZXIvYXdzE+Token==</SessionToken>
      <Expiration>2026-12-03T14:05:00.250Z</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::123:assumed-role/r/s</Arn></AssumedRoleUser>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

    #[test]
    fn parses_credentials() {
        let v = parse_response(OK).unwrap();
        assert_eq!(v.access_key_id, "ASIAEXAMPLE");
        assert_eq!(v.secret_access_key, "wJalr/K7&MDENG");
        assert_eq!(v.session_token, "FQoGZXIvYXdzE+Token==");
        assert_eq!(v.expires_at_ms, 1_796_306_700_250);
    }

    #[test]
    fn parses_errors_without_their_message() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                   <Message>User arn:aws:iam::1:user/x is not authorized</Message></Error></ErrorResponse>";
        assert_eq!(parse_response(xml), Err(StsError::Refused("AccessDenied".into())));
        assert_eq!(parse_response("<html>busy</html>"), Err(StsError::Malformed));
        let missing = OK.replace("<SessionToken>FQoGZXIvYXdzE+Token==</SessionToken>", "");
        assert_eq!(parse_response(&missing), Err(StsError::Malformed));
    }

    #[test]
    fn reads_timestamps() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2000-03-01T00:00:01Z"), Some(951_868_801_000));
        assert_eq!(rfc3339_ms("2000-03-01T02:00:01+02:00"), Some(951_868_801_000));
        assert_eq!(rfc3339_ms("2000-03-01T00:00:01.5Z"), Some(951_868_801_500));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn body_encodes_the_policy() {
        let call = AssumeRole {
            role_arn: "arn:aws:iam::123:role/r",
            session_name: "bingsan",
            external_id: None,
            policy: "{\"a\": \"b/*\"}",
            duration_secs: 900,
        };
        let body = call.body();
        assert!(body.starts_with("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123%3Arole%2Fr"));
        assert!(body.contains("&DurationSeconds=900&Policy=%7B%22a%22%3A%20%22b%2F%2A%22%7D"));
        let key = ServerKey { access_key_id: "AKID".into(), secret_access_key: "s".into(), session_token: None };
        let signed = call.sign("http://127.0.0.1:5000/", "us-east-1", &key, SystemTime::UNIX_EPOCH).unwrap();
        let auth = &signed.headers.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/19700101/us-east-1/sts/aws4_request"));
    }
}
