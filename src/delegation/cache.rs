//! The shard's vended credentials, by table location: a hot load with
//! credentials still fresh answers from here without calling STS.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::sts::Vended;

/// Credentials are renewed this long before they expire, so a client
/// never receives credentials about to lapse.
pub const RENEW_BEFORE_MS: u64 = 5 * 60 * 1000;

/// Locations kept per shard; beyond it, expired entries go, then all.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct Cache {
    map: RefCell<HashMap<Box<str>, Rc<Vended>>>,
}

impl Cache {
    /// Fresh credentials for `location`, if cached.
    pub fn get(&self, location: &str, now_ms: u64) -> Option<Rc<Vended>> {
        let map = self.map.borrow();
        let v = map.get(location)?;
        (v.expires_at_ms > now_ms.saturating_add(RENEW_BEFORE_MS)).then(|| Rc::clone(v))
    }

    pub fn put(&self, location: &str, v: Rc<Vended>, now_ms: u64) {
        let mut map = self.map.borrow_mut();
        if map.len() >= MAX_ENTRIES && !map.contains_key(location) {
            map.retain(|_, v| v.expires_at_ms > now_ms.saturating_add(RENEW_BEFORE_MS));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(location.into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vended(expires_at_ms: u64) -> Rc<Vended> {
        Rc::new(Vended {
            access_key_id: "a".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expires_at_ms,
        })
    }

    #[test]
    fn serves_until_shortly_before_expiry() {
        let c = Cache::default();
        c.put("s3://b/t", vended(1_000_000), 0);
        assert!(c.get("s3://b/t", 0).is_some());
        assert!(c.get("s3://b/t", 1_000_000 - RENEW_BEFORE_MS - 1).is_some());
        assert!(c.get("s3://b/t", 1_000_000 - RENEW_BEFORE_MS).is_none());
        assert!(c.get("s3://b/other", 0).is_none());
    }

    #[test]
    fn stays_bounded() {
        let c = Cache::default();
        for i in 0..MAX_ENTRIES + 10 {
            c.put(&format!("s3://b/t{i}"), vended(u64::MAX), 0);
        }
        assert!(c.map.borrow().len() <= MAX_ENTRIES);
        assert!(c.get(&format!("s3://b/t{}", MAX_ENTRIES + 9), 0).is_some());
    }
}
