//! Bingsan's own access tokens: stateless, HMAC-SHA256 signed.
//!
//! A token is `<payload>.<tag>`, both base64url without padding. The payload
//! is binary: a version byte (1), the issue time (when the client last proved
//! its credentials: a refresh keeps it) and the expiry (seconds since the
//! epoch, big-endian u64), then the subject (the client id, UTF-8, at most
//! [`MAX_SUBJECT`] bytes). The tag is HMAC-SHA256 over the payload's base64
//! text, so nothing untrusted is decoded before it is authenticated.
//!
//! Any shard, and any node holding the same key, validates a token with no
//! store round trip; validation decodes into stack buffers and does not
//! allocate. Rotation: tokens signed with the previous key are accepted too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// Longest subject (client id) a token carries, in bytes.
pub const MAX_SUBJECT: usize = 255;
/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8;
const MAX_PAYLOAD: usize = HEADER + MAX_SUBJECT;
/// Room for [`MAX_PAYLOAD`] plus the decoder's rounding.
pub const PAYLOAD_BUF: usize = MAX_PAYLOAD + 3;
/// base64 of [`MAX_PAYLOAD`] bytes without padding.
const MAX_PAYLOAD_B64: usize = (MAX_PAYLOAD * 4).div_ceil(3);
const TAG: usize = 32;
const TAG_B64: usize = (TAG * 4).div_ceil(3);
/// Longest well-formed token, in bytes.
pub const MAX_TOKEN: usize = MAX_PAYLOAD_B64 + 1 + TAG_B64;
/// A token issued this far in the future (clock skew between nodes) is
/// still accepted; beyond it, it is not.
const ISSUED_SKEW_SECS: u64 = 300;

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not `<payload>.<tag>` in base64url, too long, or an unknown version.
    Malformed,
    /// The tag verifies under no configured key.
    BadSignature,
    /// Past its expiry.
    Expired,
    /// Issued in the future (beyond the allowed skew).
    NotYetValid,
}

/// What a valid token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims<'a> {
    pub subject: &'a str,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// The signing key and, during a rotation, the previous one.
pub struct TokenKeys {
    current: hmac::Key,
    previous: Option<hmac::Key>,
}

impl TokenKeys {
    /// Keys from raw bytes; each at least [`MIN_KEY_BYTES`] long.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Result<TokenKeys, String> {
        for k in std::iter::once(current).chain(previous) {
            if k.len() < MIN_KEY_BYTES {
                return Err(format!("a token key must be at least {MIN_KEY_BYTES} bytes, got {}", k.len()));
            }
        }
        Ok(TokenKeys {
            current: hmac::Key::new(hmac::HMAC_SHA256, current),
            previous: previous.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        })
    }

    /// A fresh random key (tokens then die with the process).
    pub fn random() -> Result<TokenKeys, String> {
        let rng = ring::rand::SystemRandom::new();
        let mut key = [0u8; MIN_KEY_BYTES];
        ring::rand::SecureRandom::fill(&rng, &mut key).map_err(|_| "cannot generate a random token key".to_string())?;
        TokenKeys::new(&key, None)
    }

    /// Signs a token for `subject` with the current key. `issued_at` is when
    /// the client last proved its credentials (a refresh keeps it);
    /// `expires_at` is the end of this token. The subject must be at most
    /// [`MAX_SUBJECT`] bytes.
    pub fn issue(&self, subject: &str, issued_at: u64, expires_at: u64) -> String {
        let mut out = Vec::new();
        self.issue_into(subject, issued_at, expires_at, &mut out);
        String::from_utf8(out).expect("base64url and '.' are ASCII")
    }

    /// [`TokenKeys::issue`] into `out` (a shard's token buffer): the payload
    /// is built on the stack, so minting allocates nothing once `out` has room.
    pub fn issue_into(&self, subject: &str, issued_at: u64, expires_at: u64, out: &mut Vec<u8>) {
        assert!(subject.len() <= MAX_SUBJECT, "token subject too long");
        let mut payload = [0u8; HEADER + MAX_SUBJECT];
        payload[0] = VERSION;
        payload[1..9].copy_from_slice(&issued_at.to_be_bytes());
        payload[9..HEADER].copy_from_slice(&expires_at.to_be_bytes());
        payload[HEADER..HEADER + subject.len()].copy_from_slice(subject.as_bytes());
        let start = out.len();
        append_b64(out, &payload[..HEADER + subject.len()]);
        let tag = hmac::sign(&self.current, &out[start..]);
        out.push(b'.');
        append_b64(out, tag.as_ref());
    }

    /// Checks a token's signature (current key, then previous) and its
    /// times; the claims borrow `buf`. Allocates nothing.
    pub fn verify<'b>(&self, token: &[u8], now: u64, buf: &'b mut [u8; PAYLOAD_BUF]) -> Result<Claims<'b>, Rejected> {
        let claims = self.open(token, buf)?;
        if now >= claims.expires_at {
            return Err(Rejected::Expired);
        }
        if claims.issued_at > now.saturating_add(ISSUED_SKEW_SECS) {
            return Err(Rejected::NotYetValid);
        }
        Ok(claims)
    }

    /// Checks a token's signature and shape only, not its times: the claims
    /// of a token this server (or a node sharing its key) issued.
    pub fn open<'b>(&self, token: &[u8], buf: &'b mut [u8; PAYLOAD_BUF]) -> Result<Claims<'b>, Rejected> {
        if token.len() > MAX_TOKEN {
            return Err(Rejected::Malformed);
        }
        let dot = token.iter().position(|&b| b == b'.').ok_or(Rejected::Malformed)?;
        let (payload_b64, tag_b64) = (&token[..dot], &token[dot + 1..]);
        if tag_b64.len() != TAG_B64 || payload_b64.len() > MAX_PAYLOAD_B64 {
            return Err(Rejected::Malformed);
        }
        let mut tag = [0u8; TAG + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(tag_b64, &mut tag).map_err(|_| Rejected::Malformed)?;
        if n != TAG {
            return Err(Rejected::Malformed);
        }
        let tag = &tag[..TAG];
        let signed = hmac::verify(&self.current, payload_b64, tag).is_ok()
            || self.previous.as_ref().is_some_and(|k| hmac::verify(k, payload_b64, tag).is_ok());
        if !signed {
            return Err(Rejected::BadSignature);
        }
        let n = URL_SAFE_NO_PAD.decode_slice(payload_b64, &mut buf[..]).map_err(|_| Rejected::Malformed)?;
        let payload = &buf[..n];
        if n < HEADER || payload[0] != VERSION {
            return Err(Rejected::Malformed);
        }
        let issued_at = u64::from_be_bytes(payload[1..9].try_into().expect("8 bytes"));
        let expires_at = u64::from_be_bytes(payload[9..17].try_into().expect("8 bytes"));
        let subject = std::str::from_utf8(&payload[HEADER..]).map_err(|_| Rejected::Malformed)?;
        Ok(Claims { subject, issued_at, expires_at })
    }
}

/// A stack buffer for [`TokenKeys::verify`].
/// Appends the unpadded base64url form of `bytes` to `out`.
fn append_b64(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len();
    let len = base64::encoded_len(bytes.len(), false).expect("token parts are small");
    out.resize(at + len, 0);
    let written = URL_SAFE_NO_PAD.encode_slice(bytes, &mut out[at..]).expect("sized to fit");
    debug_assert_eq!(written, len);
}

pub fn payload_buf() -> [u8; PAYLOAD_BUF] {
    [0u8; PAYLOAD_BUF]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keys(k: u8) -> TokenKeys {
        TokenKeys::new(&[k; 32], None).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = keys(1);
        let t = k.issue("client-a", NOW, NOW + 3600);
        assert!(t.len() <= MAX_TOKEN);
        assert_eq!(t.matches('.').count(), 1);
        let mut buf = payload_buf();
        let c = k.verify(t.as_bytes(), NOW + 10, &mut buf).unwrap();
        assert_eq!(c, Claims { subject: "client-a", issued_at: NOW, expires_at: NOW + 3600 });
    }

    #[test]
    fn longest_subject_fits() {
        let k = keys(1);
        let sub = "é".repeat(MAX_SUBJECT / 2);
        let t = k.issue(&sub, NOW, NOW + 60);
        assert!(t.len() <= MAX_TOKEN, "{} > {}", t.len(), MAX_TOKEN);
        let mut buf = payload_buf();
        assert_eq!(k.verify(t.as_bytes(), NOW, &mut buf).unwrap().subject, sub);
    }

    #[test]
    fn expiry() {
        let k = keys(1);
        let t = k.issue("c", NOW, NOW + 60);
        let mut buf = payload_buf();
        assert!(k.verify(t.as_bytes(), NOW + 59, &mut buf).is_ok());
        assert_eq!(k.verify(t.as_bytes(), NOW + 60, &mut buf), Err(Rejected::Expired));
        assert_eq!(k.verify(t.as_bytes(), NOW + 100_000, &mut buf), Err(Rejected::Expired));
        // Issued far in the future: refused (a node with a wrong clock).
        assert_eq!(k.verify(t.as_bytes(), NOW - 3600, &mut buf), Err(Rejected::NotYetValid));
        // `open` checks the signature only: an expired token still opens.
        assert_eq!(k.open(t.as_bytes(), &mut buf).unwrap().expires_at, NOW + 60);
        assert_eq!(keys(2).open(t.as_bytes(), &mut buf), Err(Rejected::BadSignature));
    }

    #[test]
    fn wrong_key_is_refused() {
        let t = keys(1).issue("c", NOW, NOW + 60);
        let mut buf = payload_buf();
        assert_eq!(keys(2).verify(t.as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
    }

    #[test]
    fn forgeries_are_refused() {
        let k = keys(1);
        let t = k.issue("reader", NOW, NOW + 60);
        let (payload, tag) = t.split_once('.').unwrap();
        let mut buf = payload_buf();
        // Same tag, different payload (another subject, a later expiry).
        let mut raw = URL_SAFE_NO_PAD.decode(payload).unwrap();
        raw[9..17].copy_from_slice(&(NOW + 1_000_000).to_be_bytes());
        let forged = format!("{}.{}", URL_SAFE_NO_PAD.encode(&raw), tag);
        assert_eq!(k.verify(forged.as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
        let other =
            URL_SAFE_NO_PAD.encode([&[VERSION][..], &NOW.to_be_bytes(), &(NOW + 60).to_be_bytes(), b"admin"].concat());
        assert_eq!(k.verify(format!("{other}.{tag}").as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
        // A flipped tag bit.
        let mut bad_tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
        bad_tag[0] ^= 1;
        let flipped = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&bad_tag));
        assert_eq!(k.verify(flipped.as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        let k = keys(1);
        let t = k.issue("c", NOW, NOW + 60);
        let mut buf = payload_buf();
        let long = "A".repeat(MAX_TOKEN + 1);
        for bad in ["", ".", "abc", "abc.def", &t[..t.len() - 1], &format!("{t}="), &format!("{t}.x"), &long] {
            assert!(
                matches!(k.verify(bad.as_bytes(), NOW, &mut buf), Err(Rejected::Malformed | Rejected::BadSignature)),
                "{bad:?}"
            );
        }
        // Correctly signed, but not a payload this version understands.
        let tag = |p: &str| URL_SAFE_NO_PAD.encode(hmac::sign(&k.current, p.as_bytes()).as_ref());
        for payload in [URL_SAFE_NO_PAD.encode([2u8; 20]), URL_SAFE_NO_PAD.encode([1u8; 5]), "!!".to_string()] {
            let token = format!("{payload}.{}", tag(&payload));
            assert_eq!(k.verify(token.as_bytes(), NOW, &mut buf), Err(Rejected::Malformed), "{payload}");
        }
    }

    #[test]
    fn previous_key_during_rotation() {
        let old = keys(1);
        let rotated = TokenKeys::new(&[2; 32], Some(&[1; 32])).unwrap();
        let mut buf = payload_buf();
        let from_old = old.issue("c", NOW, NOW + 60);
        assert!(rotated.verify(from_old.as_bytes(), NOW, &mut buf).is_ok());
        // New tokens are signed with the new key: the old node refuses them,
        // a node that finished the rotation accepts them.
        let from_new = rotated.issue("c", NOW, NOW + 60);
        assert_eq!(old.verify(from_new.as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
        assert!(keys(2).verify(from_new.as_bytes(), NOW, &mut buf).is_ok());
        // After the rotation ends (previous key dropped), old tokens die.
        assert_eq!(keys(2).verify(from_old.as_bytes(), NOW, &mut buf), Err(Rejected::BadSignature));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(TokenKeys::new(&[0; 31], None).is_err());
        assert!(TokenKeys::new(&[0; 32], Some(&[0; 8])).is_err());
        assert!(TokenKeys::random().is_ok());
    }
}
