//! OAuth2 clients the operator configured: `--auth-clients-file`.
//!
//! One client per line, `client_id:salt_hex:pbkdf2_sha256_hex:iterations`;
//! blank lines and lines starting with `#` are skipped. The secret itself is
//! never stored: a presented secret is run through PBKDF2-HMAC-SHA256 with
//! the client's salt and iteration count and compared in constant time
//! (`ring::pbkdf2::verify`). PBKDF2 is deliberately slow, so callers run
//! [`Clients::verify`] off the shard (on its blocking pool).

use std::collections::HashMap;
use std::num::NonZeroU32;

use ring::pbkdf2;

use super::token::MAX_SUBJECT;

/// Iteration counts below this are accepted with a warning.
pub const RECOMMENDED_ITERATIONS: u32 = 100_000;

struct Client {
    salt: Vec<u8>,
    hash: Vec<u8>,
    iterations: NonZeroU32,
}

/// The configured clients, by id.
pub struct Clients {
    by_id: HashMap<String, Client>,
    /// Verified against when the id is unknown, so an unknown id costs as
    /// much time as a wrong secret and ids cannot be probed by timing.
    decoy: Client,
}

impl Clients {
    /// Parses the clients file's text. Errors name the line, never its content.
    pub fn parse(text: &str) -> Result<Clients, String> {
        let mut by_id = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split(':').collect();
            let [id, salt, hash, iterations] = fields[..] else {
                return Err(format!("line {n}: expected client_id:salt_hex:pbkdf2_sha256_hex:iterations"));
            };
            if id.is_empty() || id.len() > MAX_SUBJECT || id.chars().any(char::is_control) {
                return Err(format!("line {n}: a client id is 1 to {MAX_SUBJECT} bytes without control characters"));
            }
            let salt = hex(salt).filter(|s| !s.is_empty()).ok_or_else(|| format!("line {n}: salt is not hex"))?;
            let hash = hex(hash)
                .filter(|h| h.len() == 32)
                .ok_or_else(|| format!("line {n}: the PBKDF2-SHA256 hash must be 32 bytes of hex"))?;
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| format!("line {n}: iterations must be a positive integer"))?;
            if salt.len() < 16 {
                tracing::warn!(line = n, client = id, "auth client has a salt shorter than 16 bytes");
            }
            if iterations.get() < RECOMMENDED_ITERATIONS {
                tracing::warn!(
                    line = n,
                    client = id,
                    iterations = iterations.get(),
                    "auth client uses fewer than {RECOMMENDED_ITERATIONS} PBKDF2 iterations"
                );
            }
            if by_id.insert(id.to_string(), Client { salt, hash, iterations }).is_some() {
                return Err(format!("line {n}: client id {id:?} appears twice"));
            }
        }
        if by_id.is_empty() {
            return Err("no clients".into());
        }
        let iterations = by_id.values().map(|c| c.iterations).max().expect("at least one client");
        let decoy = Client { salt: vec![0x5a; 16], hash: vec![0; 32], iterations };
        Ok(Clients { by_id, decoy })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether client `id` is configured (a refresh checks it still is).
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// True when `secret` is the secret of client `id`. Slow by design
    /// (PBKDF2); constant-time comparison; as slow for an unknown id.
    pub fn verify(&self, id: &str, secret: &str) -> bool {
        let (client, known) = match self.by_id.get(id) {
            Some(c) => (c, true),
            None => (&self.decoy, false),
        };
        let ok = pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            client.iterations,
            &client.salt,
            secret.as_bytes(),
            &client.hash,
        )
        .is_ok();
        ok && known
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clients-file line, as the documented Python one-liner makes it.
    fn line(id: &str, secret: &str, salt: &[u8], iterations: u32) -> String {
        let mut hash = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            salt,
            secret.as_bytes(),
            &mut hash,
        );
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!("{id}:{}:{}:{iterations}", hex(salt), hex(&hash))
    }

    #[test]
    fn pbkdf2_verification() {
        let text = format!(
            "# bingsan clients\n\n{}\n  {}  \n",
            line("spark", "s3cret", b"0123456789abcdef", 1000),
            line("trino", "other", b"fedcba9876543210", 2000)
        );
        let c = Clients::parse(&text).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.verify("spark", "s3cret"));
        assert!(c.verify("trino", "other"));
        assert!(!c.verify("spark", "other"));
        assert!(!c.verify("spark", "s3cret "));
        assert!(!c.verify("spark", ""));
        assert!(!c.verify("nobody", "s3cret"));
        assert!(!c.verify("", ""));
        assert!(c.contains("spark") && !c.contains("nobody"));
    }

    /// The vector Python's `hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1)`
    /// gives (RFC 7914 section 11 lists the same PBKDF2-HMAC-SHA256 vectors).
    #[test]
    fn matches_python_hashlib() {
        let c =
            Clients::parse("py:73616c74:120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b:1").unwrap();
        assert!(c.verify("py", "password"));
        assert!(!c.verify("py", "Password"));
    }

    #[test]
    fn bad_files() {
        let good = line("a", "s", b"0123456789abcdef", 1);
        let (salt, hash) = (good.split(':').nth(1).unwrap(), good.split(':').nth(2).unwrap());
        for bad in [
            String::new(),
            "# only a comment".to_string(),
            "a:b:c".to_string(),
            format!("a:{salt}:{hash}:1:extra"),
            format!(":{salt}:{hash}:1"),
            format!("a:zz:{hash}:1"),
            format!("a::{hash}:1"),
            format!("a:{salt}:abcd:1"),
            format!("a:{salt}:{hash}:0"),
            format!("a:{salt}:{hash}:-1"),
            format!("a:{salt}:{hash}:many"),
            format!("{}:{salt}:{hash}:1", "x".repeat(MAX_SUBJECT + 1)),
            format!("{good}\n{good}"),
        ] {
            let e = Clients::parse(&bad).err().unwrap_or_else(|| panic!("accepted {bad:?}"));
            assert!(!e.contains(hash), "error echoes the line: {e}");
        }
    }
}
