//! JWT bearer tokens from an external identity provider: RS256 and ES256
//! signatures checked against the keys of a JWKS file (`--auth-jwks-file`),
//! then `iss`, `aud`, `exp` and `nbf`.
//!
//! The JWKS is read once at start-up. Verification decodes into stack
//! buffers and reads the JSON with a walker that does not allocate; ES256
//! verification allocates nothing, RS256 allocates inside `ring` (its
//! big-number arithmetic).
//!
//! Refused on purpose: `alg` other than RS256/ES256 (`none`, HS256 and
//! friends: no algorithm confusion), a header with `crit`, keys named in the
//! token itself (`jwk`, `jku`, `x5u` are ignored: keys come from the JWKS
//! only), a token without `exp`.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

use super::json::{self, as_str, as_u64, elements, members, str_eq};

/// Largest decoded header, payload and signature accepted, in bytes.
const MAX_HEADER: usize = 1024;
const MAX_PAYLOAD: usize = 8192;
const MAX_SIGNATURE: usize = 1024;

/// Why a JWT was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not three base64url segments of JSON, too large, or a missing claim.
    Malformed,
    /// `alg` is not RS256 or ES256, or the header is `crit`ical.
    Unsupported,
    /// No JWKS key matches `kid` and `alg`.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

enum PublicKey {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point: 0x04, x, y.
    P256([u8; 65]),
}

struct Key {
    kid: Option<String>,
    key: PublicKey,
}

impl Key {
    fn alg(&self) -> Alg {
        match self.key {
            PublicKey::Rsa { .. } => Alg::Rs256,
            PublicKey::P256(_) => Alg::Es256,
        }
    }
}

/// Checks JWTs against a JWKS and the expected issuer and audience.
pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    leeway: u64,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// base64url as JWKs carry it: padding tolerated.
const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl JwtVerifier {
    /// Loads a JWKS document (`{"keys":[...]}`). Keys this server cannot use
    /// (another `kty`, curve or `alg`, `use` other than `sig`) are skipped
    /// with a warning; none usable is an error.
    pub fn from_jwks(jwks: &[u8], issuer: &str, audience: &str, leeway: u64) -> Result<JwtVerifier, String> {
        let set: JwkSet = sonic_rs::from_slice(jwks).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys: Vec<Key> = Vec::new();
        for (i, jwk) in set.keys.into_iter().enumerate() {
            let name = jwk.kid.clone().unwrap_or_else(|| format!("#{i}"));
            match parse_jwk(jwk) {
                Ok(key) => {
                    if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                        return Err(format!("JWKS key {name}: kid appears twice"));
                    }
                    keys.push(key);
                }
                Err(Skip::Unusable(why)) => tracing::warn!(key = %name, "JWKS key skipped: {why}"),
                Err(Skip::Invalid(why)) => return Err(format!("JWKS key {name}: {why}")),
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 or ES256 signing key".into());
        }
        if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
            return Err("with more than one key, every JWKS key needs a kid".into());
        }
        if issuer.is_empty() || audience.is_empty() {
            return Err("the JWT issuer and audience must not be empty".into());
        }
        Ok(JwtVerifier { keys, issuer: issuer.to_string(), audience: audience.to_string(), leeway })
    }

    /// How many keys were loaded.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies a compact JWS `header.payload.signature` and its claims at
    /// time `now` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], now: u64) -> Result<(), Rejected> {
        let mut parts = token.splitn(3, |&b| b == b'.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Rejected::Malformed);
        };
        if sig_b64.contains(&b'.') {
            return Err(Rejected::Malformed);
        }
        let mut header_buf = [0u8; MAX_HEADER + 3];
        let header = decode(header_b64, &mut header_buf)?;
        let key = self.key_for(header)?;

        let mut sig_buf = [0u8; MAX_SIGNATURE + 3];
        let sig = decode(sig_b64, &mut sig_buf)?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let ok = match &key.key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n: &n[..], e: &e[..] }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok(),
            PublicKey::P256(point) => {
                sig.len() == 64
                    && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point[..])
                        .verify(signed, sig)
                        .is_ok()
            }
        };
        if !ok {
            return Err(Rejected::BadSignature);
        }

        let mut payload_buf = [0u8; MAX_PAYLOAD + 3];
        let payload = decode(payload_b64, &mut payload_buf)?;
        self.check_claims(payload, now)
    }

    /// The key the header names: by `kid`, of the header's `alg`.
    fn key_for(&self, header: &[u8]) -> Result<&Key, Rejected> {
        let (mut alg, mut kid) = (None, None);
        for member in members(header) {
            let (name, value) = member.map_err(|_| Rejected::Malformed)?;
            if str_eq(name, b"alg") {
                let v = as_str(value).ok_or(Rejected::Malformed)?;
                let a = if str_eq(v, b"RS256") {
                    Alg::Rs256
                } else if str_eq(v, b"ES256") {
                    Alg::Es256
                } else {
                    return Err(Rejected::Unsupported);
                };
                if alg.replace(a).is_some() {
                    return Err(Rejected::Malformed);
                }
            } else if str_eq(name, b"kid") {
                if kid.replace(as_str(value).ok_or(Rejected::Malformed)?).is_some() {
                    return Err(Rejected::Malformed);
                }
            } else if str_eq(name, b"crit") {
                return Err(Rejected::Unsupported);
            }
        }
        let alg = alg.ok_or(Rejected::Malformed)?;
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref().is_some_and(|want| str_eq(kid, want.as_bytes()))),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        key.filter(|k| k.alg() == alg).ok_or(Rejected::UnknownKey)
    }

    fn check_claims(&self, payload: &[u8], now: u64) -> Result<(), Rejected> {
        let (mut exp, mut nbf, mut iss_ok, mut aud_ok) = (None, None, None, None);
        for member in members(payload) {
            let (name, value) = member.map_err(|_| Rejected::Malformed)?;
            let repeated = if str_eq(name, b"exp") {
                exp.replace(as_u64(value).ok_or(Rejected::Malformed)?).is_some()
            } else if str_eq(name, b"nbf") {
                nbf.replace(as_u64(value).ok_or(Rejected::Malformed)?).is_some()
            } else if str_eq(name, b"iss") {
                let v = as_str(value).ok_or(Rejected::Malformed)?;
                iss_ok.replace(str_eq(v, self.issuer.as_bytes())).is_some()
            } else if str_eq(name, b"aud") {
                aud_ok.replace(self.audience_matches(value)?).is_some()
            } else {
                false
            };
            if repeated {
                // A claim twice: which one counts is parser-dependent; refuse.
                return Err(Rejected::Malformed);
            }
        }
        let exp = exp.ok_or(Rejected::Malformed)?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(Rejected::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(self.leeway) < nbf) {
            return Err(Rejected::NotYetValid);
        }
        if iss_ok != Some(true) {
            return Err(Rejected::WrongIssuer);
        }
        if aud_ok != Some(true) {
            return Err(Rejected::WrongAudience);
        }
        Ok(())
    }

    /// `aud` is one string or an array of strings (RFC 7519 4.1.3).
    fn audience_matches(&self, value: &[u8]) -> Result<bool, Rejected> {
        let want = self.audience.as_bytes();
        if let Some(s) = as_str(value) {
            return Ok(str_eq(s, want));
        }
        let (mut found, mut all_strings) = (false, true);
        elements(value, |e| match as_str(e) {
            Some(s) => found |= str_eq(s, want),
            None => all_strings = false,
        })
        .map_err(|_: json::Bad| Rejected::Malformed)?;
        if !all_strings {
            return Err(Rejected::Malformed);
        }
        Ok(found)
    }
}

enum Skip {
    /// Not for us (another algorithm or use): skipped.
    Unusable(String),
    /// Claims to be usable but is broken: an error.
    Invalid(String),
}

fn parse_jwk(jwk: Jwk) -> Result<Key, Skip> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(Skip::Unusable(format!("use {:?} is not sig", jwk.use_.unwrap_or_default())));
    }
    let b64 = |field: &str, v: &Option<String>| -> Result<Vec<u8>, Skip> {
        let v = v.as_deref().ok_or_else(|| Skip::Invalid(format!("missing {field}")))?;
        JWK_B64.decode(v).map_err(|_| Skip::Invalid(format!("{field} is not base64url")))
    };
    let key = match jwk.kty.as_str() {
        "RSA" => {
            if jwk.alg.as_deref().is_some_and(|a| a != "RS256") {
                return Err(Skip::Unusable(format!(
                    "alg {:?} is not supported (RS256 is)",
                    jwk.alg.unwrap_or_default()
                )));
            }
            let strip = |v: Vec<u8>| v.iter().position(|&b| b != 0).map_or(vec![], |p| v[p..].to_vec());
            let n = strip(b64("n", &jwk.n)?);
            let e = strip(b64("e", &jwk.e)?);
            if n.len() < 256 {
                return Err(Skip::Invalid(format!("RSA modulus of {} bits; at least 2048 are required", n.len() * 8)));
            }
            if n.len() > 1024 || e.is_empty() || e.len() > 4 {
                return Err(Skip::Invalid("RSA modulus or exponent out of range".into()));
            }
            PublicKey::Rsa { n, e }
        }
        "EC" => {
            if jwk.crv.as_deref() != Some("P-256") || jwk.alg.as_deref().is_some_and(|a| a != "ES256") {
                return Err(Skip::Unusable(format!(
                    "curve {:?} / alg {:?} is not supported (P-256 / ES256 is)",
                    jwk.crv.unwrap_or_default(),
                    jwk.alg.unwrap_or_default()
                )));
            }
            let (x, y) = (b64("x", &jwk.x)?, b64("y", &jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(Skip::Invalid("P-256 coordinates must be 32 bytes".into()));
            }
            let mut point = [4u8; 65];
            point[1..33].copy_from_slice(&x);
            point[33..].copy_from_slice(&y);
            PublicKey::P256(point)
        }
        other => return Err(Skip::Unusable(format!("kty {other:?} is not supported (RSA and EC are)"))),
    };
    Ok(Key { kid: jwk.kid, key })
}

/// Strict base64url (no padding) into `buf`; `Malformed` if it does not fit.
/// The raw `sub` claim of a JWT (escapes unresolved), copied into `a`;
/// `None` when it has none. Reads the payload only: verify the token first.
pub fn subject<'a>(token: &[u8], a: &'a bumpalo::Bump) -> Option<&'a [u8]> {
    let payload_b64 = token.split(|&b| b == b'.').nth(1)?;
    let mut buf = [0u8; MAX_PAYLOAD + 3];
    let payload = decode(payload_b64, &mut buf).ok()?;
    let mut sub = None;
    for member in members(payload) {
        let (name, value) = member.ok()?;
        if str_eq(name, b"sub") {
            sub = Some(as_str(value)?);
        }
    }
    sub.map(|s| &*a.alloc_slice_copy(s))
}

fn decode<'b>(segment: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], Rejected> {
    if segment.is_empty() || segment.len() > (buf.len() - 3) * 4 / 3 + 3 {
        return Err(Rejected::Malformed);
    }
    let n = URL_SAFE_NO_PAD.decode_slice(segment, buf).map_err(|_| Rejected::Malformed)?;
    Ok(&buf[..n])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

    pub const ISS: &str = "https://idp.example/realms/lake";
    pub const AUD: &str = "bingsan";
    pub const NOW: u64 = 1_700_000_000;

    fn b64(b: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Signing keys for tests, and their JWKS.
    pub struct Signers {
        pub rsa: RsaKeyPair,
        pub ec: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signers {
        pub fn new() -> Signers {
            let rng = SystemRandom::new();
            // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform DER | openssl pkcs8 -topk8 -nocrypt -inform DER -outform DER`
            let rsa = RsaKeyPair::from_pkcs8(include_bytes!("testdata/rsa2048.pk8")).expect("RSA test key");
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let ec =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            Signers { rsa, ec, rng }
        }

        pub fn jwks(&self) -> String {
            let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
            let point = self.ec.public_key().as_ref();
            format!(
                r#"{{"keys":[
                  {{"kty":"RSA","kid":"rsa-1","use":"sig","alg":"RS256","n":"{}","e":"{}"}},
                  {{"kty":"EC","kid":"ec-1","crv":"P-256","x":"{}","y":"{}"}},
                  {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
                  {{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}}
                ]}}"#,
                b64(&rsa.n),
                b64(&rsa.e),
                b64(&point[1..33]),
                b64(&point[33..])
            )
        }

        /// A compact JWS of `header` and `claims` (JSON texts).
        pub fn sign(&self, header: &str, claims: &str) -> String {
            let input = format!("{}.{}", b64(header), b64(claims));
            let sig = if header.contains("ES256") {
                self.ec.sign(&self.rng, input.as_bytes()).unwrap().as_ref().to_vec()
            } else {
                let mut sig = vec![0; self.rsa.public().modulus_len()];
                self.rsa.sign(&signature::RSA_PKCS1_SHA256, &self.rng, input.as_bytes(), &mut sig).unwrap();
                sig
            };
            format!("{input}.{}", b64(sig))
        }
    }

    pub fn claims(extra: &str) -> String {
        format!(r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"alice","iat":{NOW},"exp":{}{extra}}}"#, NOW + 300)
    }

    fn verifier(s: &Signers) -> JwtVerifier {
        JwtVerifier::from_jwks(s.jwks().as_bytes(), ISS, AUD, 60).unwrap()
    }

    #[test]
    fn loads_usable_keys_only() {
        let s = Signers::new();
        assert_eq!(verifier(&s).key_count(), 2);
        for bad in [
            "",
            "{}",
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
            r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#,
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AQAB","y":"AQAB"}]}"#,
            r#"{"keys":[{"kty":"RSA","kid":"a","e":"AQAB"}]}"#,
        ] {
            assert!(JwtVerifier::from_jwks(bad.as_bytes(), ISS, AUD, 0).is_err(), "{bad}");
        }
        let dup = s.jwks().replace("ec-1", "rsa-1");
        assert!(JwtVerifier::from_jwks(dup.as_bytes(), ISS, AUD, 0).err().unwrap().contains("twice"));
        assert!(JwtVerifier::from_jwks(s.jwks().as_bytes(), "", AUD, 0).is_err());
    }

    #[test]
    fn subject_reads_the_sub_claim() {
        let s = Signers::new();
        let a = bumpalo::Bump::new();
        let alice = s.sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &claims(""));
        assert_eq!(subject(alice.as_bytes(), &a), Some(&b"alice"[..]));
        let none = claims("").replace(r#""sub":"alice","#, "");
        assert_eq!(subject(s.sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &none).as_bytes(), &a), None);
        assert_eq!(subject(b"not-a-jwt", &a), None);
    }

    #[test]
    fn rs256_and_es256_verify() {
        let s = Signers::new();
        let v = verifier(&s);
        let rs = s.sign(r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#, &claims(""));
        assert_eq!(v.verify(rs.as_bytes(), NOW), Ok(()));
        let es = s.sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &claims(""));
        assert_eq!(v.verify(es.as_bytes(), NOW), Ok(()));
        // aud as an array; escaped slashes in iss; a fractional exp.
        let c =
            format!(r#"{{"iss":"https:\/\/idp.example\/realms\/lake","aud":["other","{AUD}"],"exp":{}.5}}"#, NOW + 10);
        assert_eq!(v.verify(s.sign(r#"{"alg":"ES256","kid":"ec-1"}"#, &c).as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn key_selection() {
        let s = Signers::new();
        let v = verifier(&s);
        let c = claims("");
        let check = |h: &str| v.verify(s.sign(h, &c).as_bytes(), NOW);
        assert_eq!(check(r#"{"alg":"RS256","kid":"nope"}"#), Err(Rejected::UnknownKey));
        // Two keys: a kid is required.
        assert_eq!(check(r#"{"alg":"RS256"}"#), Err(Rejected::UnknownKey));
        // The kid names an EC key but the header says RS256.
        assert_eq!(check(r#"{"alg":"RS256","kid":"ec-1"}"#), Err(Rejected::UnknownKey));
        // Keys the JWKS skipped (oct, use=enc) are not there.
        assert_eq!(check(r#"{"alg":"RS256","kid":"enc"}"#), Err(Rejected::UnknownKey));
        assert_eq!(check(r#"{"alg":"none","kid":"rsa-1"}"#), Err(Rejected::Unsupported));
        assert_eq!(check(r#"{"alg":"RS256","kid":"rsa-1","crit":["exp"]}"#), Err(Rejected::Unsupported));
        assert_eq!(check(r#"{"kid":"rsa-1"}"#), Err(Rejected::Malformed));
        assert_eq!(check(r#"{"alg":"RS256","alg":"RS256","kid":"rsa-1"}"#), Err(Rejected::Malformed));
        // One key only: no kid needed.
        let only_ec = format!(
            r#"{{"keys":[{}]}}"#,
            s.jwks().lines().find(|l| l.contains("ec-1")).unwrap().trim().trim_end_matches(',')
        );
        let v1 = JwtVerifier::from_jwks(only_ec.as_bytes(), ISS, AUD, 0).unwrap();
        assert_eq!(v1.verify(s.sign(r#"{"alg":"ES256"}"#, &c).as_bytes(), NOW), Ok(()));
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // HS256 signed with the RSA public key bytes as the HMAC secret.
        let s = Signers::new();
        let v = verifier(&s);
        let input = format!("{}.{}", b64(r#"{"alg":"HS256","kid":"rsa-1"}"#), b64(claims("")));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.rsa.public().as_ref());
        let token = format!("{input}.{}", b64(ring::hmac::sign(&key, input.as_bytes())));
        assert_eq!(v.verify(token.as_bytes(), NOW), Err(Rejected::Unsupported));
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(claims("")));
        assert_eq!(v.verify(unsigned.as_bytes(), NOW), Err(Rejected::Unsupported));
    }

    #[test]
    fn forged_and_tampered_tokens() {
        let s = Signers::new();
        let v = verifier(&s);
        for header in [r#"{"alg":"RS256","kid":"rsa-1"}"#, r#"{"alg":"ES256","kid":"ec-1"}"#] {
            let t = s.sign(header, &claims(""));
            let parts: Vec<&str> = t.split('.').collect();
            let admin = b64(claims(r#","sub2":"admin""#));
            let swapped = format!("{}.{admin}.{}", parts[0], parts[2]);
            assert_eq!(v.verify(swapped.as_bytes(), NOW), Err(Rejected::BadSignature), "{header}");
            // Signed by a key that is not in the JWKS.
            let other = Signers::new();
            if header.contains("ES256") {
                assert_eq!(v.verify(other.sign(header, &claims("")).as_bytes(), NOW), Err(Rejected::BadSignature));
            }
            for bad in [&t[..t.len() - 2], "a.b", "a.b.c.d", "..", &format!("{t}.x"), &t.replace('.', "")] {
                assert!(v.verify(bad.as_bytes(), NOW).is_err(), "{bad}");
            }
        }
    }

    #[test]
    fn claims_are_checked() {
        let s = Signers::new();
        let v = verifier(&s);
        let h = r#"{"alg":"ES256","kid":"ec-1"}"#;
        let check = |c: &str, now: u64| v.verify(s.sign(h, c).as_bytes(), now);
        let exp = NOW + 300;
        assert_eq!(check(&claims(""), exp - 1), Ok(()));
        // 60 s of leeway.
        assert_eq!(check(&claims(""), exp + 59), Ok(()));
        assert_eq!(check(&claims(""), exp + 60), Err(Rejected::Expired));
        assert_eq!(check(&claims(&format!(r#","nbf":{}"#, NOW + 100)), NOW), Err(Rejected::NotYetValid));
        assert_eq!(check(&claims(&format!(r#","nbf":{}"#, NOW + 30)), NOW), Ok(()));
        let no_exp = format!(r#"{{"iss":"{ISS}","aud":"{AUD}"}}"#);
        assert_eq!(check(&no_exp, NOW), Err(Rejected::Malformed));
        let c = |iss: &str, aud: &str| format!(r#"{{"iss":{iss},"aud":{aud},"exp":{exp}}}"#);
        assert_eq!(check(&c(r#""https://evil.example""#, r#""bingsan""#), NOW), Err(Rejected::WrongIssuer));
        assert_eq!(check(&format!(r#"{{"aud":"{AUD}","exp":{exp}}}"#), NOW), Err(Rejected::WrongIssuer));
        assert_eq!(check(&c(&format!("\"{ISS}\""), r#""other""#), NOW), Err(Rejected::WrongAudience));
        assert_eq!(check(&c(&format!("\"{ISS}\""), r#"["a","b"]"#), NOW), Err(Rejected::WrongAudience));
        assert_eq!(check(&format!(r#"{{"iss":"{ISS}","exp":{exp}}}"#), NOW), Err(Rejected::WrongAudience));
        assert_eq!(check(&c(&format!("\"{ISS}\""), "[1]"), NOW), Err(Rejected::Malformed));
        assert_eq!(check(&c(&format!("\"{ISS}\""), "\"bingsan\",\"exp\":1"), NOW), Err(Rejected::Malformed));
        assert_eq!(check(&claims(r#","exp":"soon""#), NOW), Err(Rejected::Malformed));
        assert_eq!(check("not json", NOW), Err(Rejected::Malformed));
    }
}
