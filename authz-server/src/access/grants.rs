//! The grants in force: every `AccessRequest` whose grant carries a valid signature,
//! indexed by cluster and user, fed by the watch on the API server
//! ([`super::store`]). Privilege resolution asks it for a user's active grants on
//! every decision; nothing else it holds is trusted.

use super::object::{epoch, AccessRequest};
use super::signing::SigningKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// A verified grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `AccessRequest`'s name: what audit events and the API server's
    /// `kubegate.dev/grant-id` extra show.
    pub id: String,
    pub cluster: String,
    pub user: String,
    /// The workflow it was granted under: a grant counts only while that workflow
    /// exists and would still grant it.
    pub workflow: String,
    pub levels: BTreeSet<String>,
    pub not_before: i64,
    pub expires_at: i64,
    /// The status already says `Expired` (so the expiry sweep leaves it be).
    pub expiry_recorded: bool,
}

impl Grant {
    /// The grant `object` carries, if authz-server signed it for this object as it is
    /// now and it was not revoked.
    pub fn verified(object: &AccessRequest, key: &SigningKey) -> Option<Self> {
        let grant = object.status.as_ref()?.grant.as_ref()?;
        if object.spec.revoked || !key.grant_is_valid(object, grant) {
            return None;
        }
        // Signed levels are a subset of the requested ones by construction; checked
        // anyway, so a signing bug cannot grant what nobody asked for.
        if !grant.levels.iter().all(|l| object.spec.levels.contains(l)) {
            return None;
        }
        Some(Self {
            id: object.name().to_owned(),
            cluster: object.spec.cluster.clone(),
            user: object.spec.requester.clone(),
            workflow: object.spec.workflow.clone(),
            levels: grant.levels.iter().cloned().collect(),
            not_before: epoch(&grant.not_before)?,
            expires_at: epoch(&grant.expires_at)?,
            expiry_recorded: object.status().phase == super::object::Phase::Expired,
        })
    }

    pub fn is_active(&self, now: i64) -> bool {
        self.not_before <= now && now < self.expires_at
    }
}

#[derive(Default)]
struct Index {
    by_name: HashMap<String, Arc<Grant>>,
    by_holder: HashMap<(String, String), BTreeMap<String, Arc<Grant>>>,
}

impl Index {
    fn remove(&mut self, name: &str) {
        if let Some(old) = self.by_name.remove(name) {
            let holder = (old.cluster.clone(), old.user.clone());
            if let Some(grants) = self.by_holder.get_mut(&holder) {
                grants.remove(name);
                if grants.is_empty() {
                    self.by_holder.remove(&holder);
                }
            }
        }
    }

    fn insert(&mut self, grant: Grant) {
        let grant = Arc::new(grant);
        let holder = (grant.cluster.clone(), grant.user.clone());
        self.by_holder.entry(holder).or_default().insert(grant.id.clone(), grant.clone());
        self.by_name.insert(grant.id.clone(), grant);
    }
}

/// How long the watch may fail before grants stop counting: a replica cut off from
/// the API server cannot see revocations, so it fails closed.
pub const STALE_AFTER_SECONDS: i64 = 30;

/// Verified grants, shared by every request.
pub struct GrantIndex {
    key: SigningKey,
    index: RwLock<Index>,
    /// Since when the watch has been failing (no event read since), if it is.
    failing_since: std::sync::Mutex<Option<i64>>,
}

impl GrantIndex {
    pub fn new(key: SigningKey) -> Self {
        Self { key, index: RwLock::new(Index::default()), failing_since: std::sync::Mutex::new(None) }
    }

    /// The watch read an event (`ok`) or failed, at `now`.
    pub fn record_watch(&self, ok: bool, now: i64) {
        let mut failing = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        match (ok, *failing) {
            (true, Some(since)) => {
                tracing::info!(seconds = now - since, "the watch on access requests is back");
                *failing = None;
            }
            (false, None) => *failing = Some(now),
            _ => {}
        }
    }

    /// Whether the watch has failed for longer than [`STALE_AFTER_SECONDS`] at `now`.
    pub fn is_stale(&self, now: i64) -> bool {
        self.failing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|since| now - since > STALE_AFTER_SECONDS)
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// `object` was created or changed.
    pub fn apply(&self, object: &AccessRequest) {
        let grant = Grant::verified(object, &self.key);
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.remove(object.name());
        if let Some(grant) = grant {
            index.insert(grant);
        }
    }

    /// `name` was deleted.
    pub fn remove(&self, name: &str) {
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Everything is re-read (the watch re-listed).
    pub fn replace_all<'a>(&self, objects: impl IntoIterator<Item = &'a AccessRequest>) {
        let mut fresh = Index::default();
        for grant in objects.into_iter().filter_map(|o| Grant::verified(o, &self.key)) {
            fresh.insert(grant);
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// `user`'s grants on `cluster` active at `now`, by id.
    pub fn active(&self, cluster: &str, user: &str, now: i64) -> Vec<Arc<Grant>> {
        if self.is_stale(now) {
            return Vec::new();
        }
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let Some(grants) = index.by_holder.get(&(cluster.to_owned(), user.to_owned())) else {
            return Vec::new();
        };
        grants.values().filter(|g| g.is_active(now)).cloned().collect()
    }

    /// Whether the grant `id` is in force at `now`: indexed (so signed by authz-server
    /// for its object as it is now, and not revoked) and within its times. The gateway
    /// filter asks this for the grants its running streams were opened under
    /// ([`super::grant_status`]).
    pub fn is_active(&self, id: &str, now: i64) -> bool {
        !self.is_stale(now)
            && self.index.read().unwrap_or_else(|p| p.into_inner()).by_name.get(id).is_some_and(|g| g.is_active(now))
    }

    /// Every verified grant, active or not (for the expiry sweep).
    pub fn all(&self) -> Vec<Arc<Grant>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).by_name.values().cloned().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::access::object::{rfc3339, AccessRequestSpec, AccessRequestStatus, Phase, SignedGrant};

    pub(crate) fn signed(key: &SigningKey, name: &str, user: &str, from: i64, until: i64) -> AccessRequest {
        let spec = AccessRequestSpec {
            requester: user.into(),
            cluster: "dev".into(),
            workflow: "oncall".into(),
            levels: vec!["oncall".into()],
            duration_seconds: (until - from) as u64,
            reason: String::new(),
            revoked: false,
        };
        let mut object = AccessRequest::new("kubegate", spec);
        object.metadata.name = Some(name.into());
        object.metadata.uid = Some(format!("uid-{name}"));
        object.metadata.generation = Some(1);
        let mut grant = SignedGrant {
            levels: vec!["oncall".into()],
            not_before: rfc3339(from),
            expires_at: rfc3339(until),
            signature: String::new(),
        };
        grant.signature = key.sign_grant(&object, &grant);
        object.status = Some(AccessRequestStatus { phase: Phase::Approved, grant: Some(grant), ..Default::default() });
        object
    }

    #[test]
    fn active_grants_by_cluster_user_and_time() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let index = GrantIndex::new(key.clone());
        index.apply(&signed(&key, "ar-1", "alice", 100, 200));
        index.apply(&signed(&key, "ar-2", "alice", 150, 300));
        index.apply(&signed(&key, "ar-3", "bob", 100, 200));
        let ids = |now| index.active("dev", "alice", now).iter().map(|g| g.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(99), Vec::<String>::new());
        assert_eq!(ids(160), ["ar-1", "ar-2"]);
        assert_eq!(ids(200), ["ar-2"], "a grant ends at its expiry second");
        assert!(index.active("prod", "alice", 160).is_empty());
        index.remove("ar-2");
        assert!(ids(250).is_empty());
    }

    /// Attack: a user with RBAC on `accessrequests/status` writes `phase: Approved` and a
    /// grant into their own request, or revokes-then-restores; the index ignores both.
    #[test]
    fn unsigned_or_revoked_grants_are_not_indexed() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let index = GrantIndex::new(key.clone());
        let mut forged = signed(&SigningKey::from_bytes(&[2; 32]), "ar-1", "alice", 0, i64::MAX / 2);
        index.apply(&forged);
        assert!(index.active("dev", "alice", 10).is_empty(), "signed with another key");
        forged = signed(&key, "ar-1", "alice", 0, 1000);
        index.apply(&forged);
        assert_eq!(index.active("dev", "alice", 10).len(), 1, "the control");
        forged.spec.revoked = true;
        index.apply(&forged);
        assert!(index.active("dev", "alice", 10).is_empty(), "revoked");
        forged.spec.revoked = false;
        forged.metadata.generation = Some(3);
        index.apply(&forged);
        assert!(index.active("dev", "alice", 10).is_empty(), "restored after revocation: a new generation");
    }

    /// A replica whose watch keeps failing cannot see revocations: after
    /// STALE_AFTER_SECONDS its grants stop counting, and count again once it reads.
    #[test]
    fn grants_stop_counting_while_the_watch_is_down() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let index = GrantIndex::new(key.clone());
        index.apply(&signed(&key, "ar-1", "alice", 0, 10_000));
        index.record_watch(false, 100);
        index.record_watch(false, 120);
        assert_eq!(index.active("dev", "alice", 130).len(), 1, "a short outage is tolerated");
        assert!(index.active("dev", "alice", 131).is_empty(), "failing since 100, for more than 30 s");
        index.record_watch(true, 140);
        assert_eq!(index.active("dev", "alice", 141).len(), 1);
    }

    #[test]
    fn a_relist_replaces_everything() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let index = GrantIndex::new(key.clone());
        index.apply(&signed(&key, "ar-1", "alice", 0, 100));
        index.replace_all([&signed(&key, "ar-2", "bob", 0, 100)]);
        assert!(index.active("dev", "alice", 10).is_empty());
        assert_eq!(index.active("dev", "bob", 10).len(), 1);
        assert_eq!(index.all().len(), 1);
    }
}
