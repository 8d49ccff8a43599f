//! Tokens already verified, so a repeated token skips signature verification.
//!
//! Keyed by the SHA-256 of the whole token (the same bytes were verified before; a
//! different token, even for the same user, is a miss). An entry dies at the token's
//! `exp`, and with the key set it was verified against: when an issuer's keys change
//! (rotation, a key withdrawn), everything verified with the old set is void. Bounded:
//! when full, expired entries go first, then an arbitrary tenth.

use super::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cache key: SHA-256 of the token.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    identity: Arc<Identity>,
    /// Which issuer, and which generation of its keys, verified the token.
    issuer: usize,
    key_generation: u64,
}

/// A bounded map of verified tokens.
pub struct VerifiedTokenCache {
    capacity: usize,
    entries: Mutex<HashMap<TokenDigest, Entry>>,
}

impl VerifiedTokenCache {
    /// A cache of at most `capacity` tokens (0: caching off).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The identity of a token verified before, if it has not expired and the issuer's
    /// keys are still those it was verified with (`key_generation` answers `None` when
    /// an issuer's keys are no longer trusted at all).
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: u64,
        key_generation: impl Fn(usize) -> Option<u64>,
    ) -> Option<Arc<Identity>> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.lock();
        let entry = entries.get(digest)?;
        if now >= entry.identity.expires_at || key_generation(entry.issuer) != Some(entry.key_generation) {
            entries.remove(digest);
            return None;
        }
        Some(entry.identity.clone())
    }

    /// Remembers a verified token.
    pub fn insert(&self, digest: TokenDigest, identity: Arc<Identity>, issuer: usize, key_generation: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.identity.expires_at > now);
        }
        if entries.len() >= self.capacity {
            let evict: Vec<TokenDigest> = entries.keys().take((self.capacity / 10).max(1)).copied().collect();
            for key in evict {
                entries.remove(&key);
            }
        }
        entries.insert(digest, Entry { identity, issuer, key_generation });
    }

    /// How many tokens are cached.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: u64) -> Arc<Identity> {
        Arc::new(Identity { username: "a".into(), groups: vec![], uid: None, expires_at: exp })
    }

    #[test]
    fn entries_die_with_the_token() {
        let cache = VerifiedTokenCache::new(10);
        cache.insert(digest("t"), identity(100), 0, 1, 50);
        assert!(cache.get(&digest("t"), 99, |_| Some(1)).is_some());
        assert!(cache.get(&digest("t"), 100, |_| Some(1)).is_none(), "not at or after exp");
        assert_eq!(cache.count(), 0);
    }

    #[test]
    fn entries_die_with_the_keys_they_were_verified_with() {
        let cache = VerifiedTokenCache::new(10);
        cache.insert(digest("t"), identity(100), 0, 1, 50);
        assert!(cache.get(&digest("t"), 60, |_| Some(2)).is_none());
    }

    #[test]
    fn entries_die_when_the_keys_are_no_longer_trusted() {
        let cache = VerifiedTokenCache::new(10);
        cache.insert(digest("t"), identity(100), 0, 1, 50);
        assert!(cache.get(&digest("t"), 60, |_| None).is_none());
    }

    #[test]
    fn stays_within_capacity() {
        let cache = VerifiedTokenCache::new(100);
        for i in 0..1000 {
            cache.insert(digest(&i.to_string()), identity(10_000), 0, 1, 0);
        }
        assert!(cache.count() <= 100);
        assert!(cache.get(&digest("999"), 1, |_| Some(1)).is_some(), "the newest is kept");
    }

    #[test]
    fn capacity_zero_is_off() {
        let cache = VerifiedTokenCache::new(0);
        cache.insert(digest("t"), identity(100), 0, 1, 50);
        assert!(cache.get(&digest("t"), 60, |_| Some(1)).is_none());
    }
}
