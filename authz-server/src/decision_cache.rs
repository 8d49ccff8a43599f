//! Outcomes of recent decisions, so a repeated request (kubectl's discovery, a
//! controller's polling) skips privilege resolution and policy evaluation.
//!
//! Keyed by everything a decision depends on: the rules generation (a reload voids every
//! entry), the identity (user, IdP groups, uid), what the client asked to impersonate,
//! the method and target, and the source address. An entry lives at most `ttl`
//! (policies may test `context.time`) and never past the `exp` of the token it was
//! decided for; the token of the request that hits it has just been validated. Bounded:
//! when full, expired entries go first, then an arbitrary tenth.

use crate::access::grants::Grant;
use crate::oidc::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A cached outcome (`T` is whatever the gatekeeper needs to rebuild its answer).
struct Entry<T> {
    outcome: Arc<T>,
    dies: Instant,
}

pub struct DecisionCache<T> {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry<T>>>,
}

/// What a decision depends on.
pub struct DecisionKey<'a> {
    pub rules_generation: u64,
    /// The cluster the request was selected for.
    pub cluster: &'a str,
    pub identity: &'a Identity,
    pub requested_impersonation: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a str,
    pub source_ip: &'a str,
    /// The request may create its object (a `PUT`, or a server-side apply `PATCH`),
    /// which is checked as `create` too: it depends on the `Content-Type`.
    pub may_create: bool,
    /// The user's access grants active on the cluster now: an approval, an expiry or a
    /// revocation changes them, so no cached decision outlives a grant.
    pub grants: &'a [Arc<Grant>],
}

impl DecisionKey<'_> {
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        // Length-prefixed fields: no two different keys can produce the same bytes.
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(&self.rules_generation.to_le_bytes());
        field(self.cluster.as_bytes());
        field(self.identity.username.as_bytes());
        field(&(self.identity.groups.len() as u64).to_le_bytes());
        for group in &self.identity.groups {
            field(group.as_bytes());
        }
        field(self.identity.uid.as_deref().unwrap_or("\u{0}").as_bytes());
        field(self.requested_impersonation.unwrap_or("\u{0}").as_bytes());
        field(self.method.as_bytes());
        field(self.target.as_bytes());
        field(self.source_ip.as_bytes());
        field(&[u8::from(self.may_create)]);
        field(&(self.grants.len() as u64).to_le_bytes());
        for grant in self.grants {
            field(grant.id.as_bytes());
            field(&grant.expires_at.to_le_bytes());
        }
        h.finalize().into()
    }
}

impl<T> DecisionCache<T> {
    /// At most `capacity` outcomes (0: off), each for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { capacity, ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry<T>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &DecisionKey<'_>) -> Option<Arc<T>> {
        if self.capacity == 0 {
            return None;
        }
        let digest = key.digest();
        let mut entries = self.lock();
        let entry = entries.get(&digest)?;
        if Instant::now() >= entry.dies {
            entries.remove(&digest);
            return None;
        }
        Some(entry.outcome.clone())
    }

    pub fn insert(&self, key: &DecisionKey<'_>, outcome: Arc<T>) {
        if self.capacity == 0 {
            return;
        }
        let now_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(u64::MAX);
        let token_left = Duration::from_secs(key.identity.expires_at.saturating_sub(now_epoch));
        let dies = Instant::now() + self.ttl.min(token_left);
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            let now = Instant::now();
            entries.retain(|_, e| e.dies > now);
        }
        if entries.len() >= self.capacity {
            let evict: Vec<[u8; 32]> = entries.keys().take((self.capacity / 10).max(1)).copied().collect();
            for k in evict {
                entries.remove(&k);
            }
        }
        entries.insert(key.digest(), Entry { outcome, dies });
    }

    /// How many outcomes are cached.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: u64) -> Identity {
        Identity { username: "alice".into(), groups: vec!["a".into()], uid: None, expires_at: exp }
    }

    fn key<'a>(identity: &'a Identity, generation: u64, target: &'a str) -> DecisionKey<'a> {
        DecisionKey {
            rules_generation: generation,
            cluster: "prod",
            identity,
            requested_impersonation: None,
            method: "GET",
            target,
            source_ip: "10.0.0.1",
            may_create: false,
            grants: &[],
        }
    }

    #[test]
    fn hits_only_the_same_identity_request_and_rules() {
        let cache = DecisionCache::new(100, Duration::from_secs(60));
        let alice = identity(u64::MAX);
        cache.insert(&key(&alice, 1, "/api"), Arc::new("allowed"));
        assert_eq!(cache.get(&key(&alice, 1, "/api")).as_deref(), Some(&"allowed"));
        assert!(cache.get(&key(&alice, 2, "/api")).is_none(), "a reload voids it");
        assert!(cache.get(&key(&alice, 1, "/apis")).is_none());
        let mut other_groups = identity(u64::MAX);
        other_groups.groups.push("b".into());
        assert!(cache.get(&key(&other_groups, 1, "/api")).is_none(), "groups are part of the key");
        let narrowed = DecisionKey { requested_impersonation: Some("{}"), ..key(&alice, 1, "/api") };
        assert!(cache.get(&narrowed).is_none(), "so is a narrowing request");
        let apply = DecisionKey { may_create: true, ..key(&alice, 1, "/api") };
        assert!(cache.get(&apply).is_none(), "and a request that may create its object");
    }

    /// Attack: a cached allow outliving the grant it was decided under (revoked, or
    /// expired, or one replaced by a shorter one).
    #[test]
    fn a_change_in_the_users_grants_is_another_key() {
        let cache = DecisionCache::new(100, Duration::from_secs(60));
        let alice = identity(u64::MAX);
        let grant = |id: &str, expires_at| {
            Arc::new(Grant {
                id: id.into(),
                cluster: "prod".into(),
                user: "alice".into(),
                workflow: "oncall".into(),
                levels: ["oncall".to_string()].into(),
                not_before: 0,
                expires_at,
                expiry_recorded: false,
            })
        };
        let granted = [grant("ar-1", 100)];
        cache.insert(&DecisionKey { grants: &granted, ..key(&alice, 1, "/api") }, Arc::new("allowed"));
        assert!(cache.get(&DecisionKey { grants: &granted, ..key(&alice, 1, "/api") }).is_some());
        assert!(cache.get(&key(&alice, 1, "/api")).is_none(), "the grant ended");
        let shorter = [grant("ar-1", 50)];
        assert!(cache.get(&DecisionKey { grants: &shorter, ..key(&alice, 1, "/api") }).is_none());
        let another = [grant("ar-2", 100)];
        assert!(cache.get(&DecisionKey { grants: &another, ..key(&alice, 1, "/api") }).is_none());
    }

    #[test]
    fn entries_die_with_the_ttl_and_never_outlive_the_token() {
        let cache = DecisionCache::new(100, Duration::from_millis(50));
        let alice = identity(u64::MAX);
        cache.insert(&key(&alice, 1, "/api"), Arc::new(()));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key(&alice, 1, "/api")).is_none());
        let cache = DecisionCache::new(100, Duration::from_secs(600));
        let expiring = identity(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        cache.insert(&key(&expiring, 1, "/api"), Arc::new(()));
        assert!(cache.get(&key(&expiring, 1, "/api")).is_none(), "the token expires now");
    }

    #[test]
    fn stays_within_capacity_and_can_be_off() {
        let cache = DecisionCache::new(50, Duration::from_secs(60));
        let alice = identity(u64::MAX);
        let targets: Vec<String> = (0..500).map(|i| format!("/api/{i}")).collect();
        for t in &targets {
            cache.insert(&key(&alice, 1, t), Arc::new(()));
        }
        assert!(cache.count() <= 50);
        let off = DecisionCache::new(0, Duration::from_secs(60));
        off.insert(&key(&alice, 1, "/api"), Arc::new(()));
        assert!(off.get(&key(&alice, 1, "/api")).is_none());
    }
}
