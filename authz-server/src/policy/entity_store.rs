//! The Cedar entity stores policy questions are asked against, built as rarely as the
//! answers allow.
//!
//! A decision asks up to three questions about one user on one cluster
//! (`fetchPrivileges`, `impersonate`, the request's verb), and that user asks again with
//! their next request. What Cedar needs to know about them (the user, their groups and
//! roles, the cluster, and the schema's action entities) is the same every time, and
//! building a store is most of a decision's cost: `Entities::from_entities` computes
//! the transitive closure of everything it is given, and with a schema also checks it
//! and adds the schema's actions (profiled in `docs/benchmarks.md`). So a store is
//! built once per user, cluster and rule set ([`PrincipalStore`], kept in a bounded
//! cache) and a request adds its one resource entity to a copy.
//!
//! Checking what kubegate's own typed code builds against the schema cannot fail at
//! run time when it never fails in tests: [`Checking`] runs it in debug builds (every
//! test) and skips it in release builds. [`Assembly::Direct`] is the straightforward
//! construction (everything from scratch, checked, per question) the shared one is
//! compared with.

use super::context::{self, Record};
use super::entities::{self, ClusterFacts, Principal};
use cedar_policy::{Entities, Entity, EntityUid, Request, Schema};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, RwLock};

/// Users (per cluster) whose stores are kept: about 9 KiB each (measured: 10,000 held
/// 93 MiB; the action and cluster entities are shared, each store's own table and the
/// user's entities are not), so about 9 MiB. A user beyond it pays one store build.
pub(super) const DEFAULT_CAPACITY: usize = 1024;

/// Whether what kubegate builds is checked against its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checking {
    /// Every entity and request (debug builds, so every test).
    Every,
    /// None: kubegate's builders are typed, and tests check what they build.
    Trusted,
}

impl Checking {
    pub(super) const fn for_this_build() -> Self {
        if cfg!(debug_assertions) {
            Checking::Every
        } else {
            Checking::Trusted
        }
    }
}

/// How a question's entities are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Assembly {
    /// One store per user (cached), a copy plus the resource per request.
    Shared(Checking),
    /// Everything from scratch for every question, checked against the schema, and
    /// every policy of the action asked: what kubegate did before stores were shared
    /// and policies chosen by scope, kept as the reference both are tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    Direct,
}

/// What one question is about besides its principal.
pub(super) struct Question<'a> {
    pub action: EntityUid,
    pub resource: Resource,
    pub context: Record<'a>,
}

/// A question's resource.
pub(super) enum Resource {
    /// The cluster itself (`fetchPrivileges`, `impersonate`, `approve`, `discover`).
    Cluster,
    /// An object or URL on it, with its entity.
    Entity(Box<Entity>),
}

/// A question ready for Cedar.
pub(super) struct Asked {
    pub request: Request,
    store: Arc<PrincipalStore>,
    /// Built for this question (with its resource); else the user's store as it is.
    own: Option<Entities>,
    /// The resource and the entities it is in.
    resource_in: Vec<EntityUid>,
}

impl Asked {
    pub(super) fn entities(&self) -> &Entities {
        self.own.as_ref().unwrap_or(&self.store.entities)
    }

    /// The user and the entities they are in (their groups and roles).
    pub(super) fn principal_in(&self) -> &[EntityUid] {
        &self.store.principal_in
    }

    /// The resource and the entities it is in (its cluster).
    pub(super) fn resource_in(&self) -> &[EntityUid] {
        &self.resource_in
    }
}

/// What Cedar knows about one user on one cluster.
pub(super) struct PrincipalStore {
    cluster: ClusterFacts,
    principal: Principal,
    user: EntityUid,
    cluster_uid: EntityUid,
    /// The user, their groups and their roles.
    principal_in: Vec<EntityUid>,
    /// The schema's actions, the cluster and the user with their groups and roles.
    entities: Entities,
    /// [`Assembly::Direct`]: the cluster and user entities, to build each question's
    /// store from.
    parts: Option<Vec<Entity>>,
}

/// The stores of one rule set.
pub(super) struct EntityStores {
    assembly: Assembly,
    /// The schema's action entities (`get in request`), in every shared store.
    actions: Vec<Entity>,
    /// Per cluster, its entity and the actions: users' stores are copies of it with the
    /// user added, so they share these entities rather than each holding its own.
    bases: RwLock<HashMap<ClusterFacts, Entities>>,
    cache: PrincipalCache,
}

impl EntityStores {
    pub(super) fn new(schema: &Schema, assembly: Assembly, capacity: usize) -> Result<Self, String> {
        let actions = schema.action_entities().map_err(|e| e.to_string())?.iter().cloned().collect();
        Ok(Self { assembly, actions, bases: RwLock::default(), cache: PrincipalCache::new(capacity) })
    }

    pub(super) fn assembly(&self) -> Assembly {
        self.assembly
    }

    /// Whether what is built is checked against the schema (the reference always is).
    fn checking(&self) -> Checking {
        match self.assembly {
            Assembly::Direct => Checking::Every,
            Assembly::Shared(checking) => checking,
        }
    }

    /// The store for `principal` on `cluster`, from the cache when it is there.
    pub(super) fn principal(
        &self,
        schema: &Schema,
        cluster: &ClusterFacts,
        principal: &Principal,
    ) -> Result<Arc<PrincipalStore>, String> {
        if self.assembly == Assembly::Direct {
            return self.build(schema, cluster, principal).map(Arc::new);
        }
        let key = self.cache.key(cluster, principal);
        if let Some(store) = self.cache.get(key, cluster, principal) {
            return Ok(store);
        }
        let store = Arc::new(self.build(schema, cluster, principal)?);
        self.cache.insert(key, store.clone());
        Ok(store)
    }

    fn build(&self, schema: &Schema, cluster: &ClusterFacts, principal: &Principal) -> Result<PrincipalStore, String> {
        let (user, cluster_uid, parts) = entities::principal_entities(principal, cluster)?;
        let principal_in = parts.iter().map(Entity::uid).filter(|uid| *uid != cluster_uid).collect();
        let (entities, parts) = match self.assembly {
            // The schema adds its actions.
            Assembly::Direct => {
                (Entities::from_entities(parts.iter().cloned(), Some(schema)).map_err(|e| e.to_string())?, Some(parts))
            }
            Assembly::Shared(checking) => {
                if checking == Checking::Every {
                    Entities::from_entities(parts.iter().cloned(), Some(schema)).map_err(|e| e.to_string())?;
                }
                let (cluster_entity, user_entities): (Vec<Entity>, Vec<Entity>) =
                    parts.into_iter().partition(|entity| entity.uid() == cluster_uid);
                let base = self.base(cluster, cluster_entity)?;
                (add_closed(&base, user_entities, checking)?, None)
            }
        };
        let (cluster, principal) = (cluster.clone(), principal.clone());
        Ok(PrincipalStore { cluster, principal, user, cluster_uid, principal_in, entities, parts })
    }

    /// The actions and `cluster`'s entity, built once per cluster.
    fn base(&self, cluster: &ClusterFacts, entity: Vec<Entity>) -> Result<Entities, String> {
        if let Some(base) = self.bases.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(cluster) {
            return Ok(base.clone());
        }
        let base =
            Entities::from_entities(self.actions.iter().cloned().chain(entity), None).map_err(|e| e.to_string())?;
        let mut bases = self.bases.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clusters are few; a rule set that names thousands starts over rather than grow.
        if bases.len() >= 1024 {
            bases.clear();
        }
        bases.insert(cluster.clone(), base.clone());
        Ok(base)
    }

    /// `question` about the user of `store`, with the entities Cedar needs for it.
    pub(super) fn ask(
        &self,
        schema: &Schema,
        store: Arc<PrincipalStore>,
        question: Question<'_>,
    ) -> Result<Asked, String> {
        let Question { action, resource, context } = question;
        let resource_in = match &resource {
            Resource::Cluster => vec![store.cluster_uid.clone()],
            Resource::Entity(entity) => vec![entity.uid(), store.cluster_uid.clone()],
        };
        let resource_uid = resource_in[0].clone();
        let checking = self.checking();
        let checked = (checking == Checking::Every).then_some(schema);
        let context = match self.assembly {
            Assembly::Direct => context::from_expressions(&context)?,
            Assembly::Shared(Checking::Every) => context::checked(&context)?,
            Assembly::Shared(Checking::Trusted) => context::from_values(&context)?,
        };
        let request =
            Request::new(store.user.clone(), action, resource_uid, context, checked).map_err(|e| e.to_string())?;
        let own = match (resource, &store.parts) {
            (Resource::Cluster, _) => None,
            (Resource::Entity(entity), Some(parts)) => {
                let all = parts.iter().cloned().chain([*entity]);
                Some(Entities::from_entities(all, Some(schema)).map_err(|e| e.to_string())?)
            }
            (Resource::Entity(entity), None) => {
                if checked.is_some() {
                    Entities::from_entities([(*entity).clone()], checked).map_err(|e| e.to_string())?;
                }
                Some(add_closed(&store.entities, [*entity], checking)?)
            }
        };
        Ok(Asked { request, store, own, resource_in })
    }

    /// How many users' stores are kept now.
    #[cfg(test)]
    pub(super) fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// A copy of `store` with `added`, whose closure is not recomputed.
///
/// Sound because of the shape kubegate builds: a user's parents (groups, roles) and a
/// resource's parent (its cluster) have no parents of their own, and no entity already
/// in a store has a new one as its ancestor; so each added entity's parents are already
/// its whole closure. Cedar's public `add_entities` instead rescans the ancestors of
/// every entity in the store, the schema's twenty actions included (profiled: a fifth of
/// a decision). Checked builds (every test) verify the closure and that the graph has
/// no cycle.
fn add_closed(
    store: &Entities,
    added: impl IntoIterator<Item = Entity>,
    checking: Checking,
) -> Result<Entities, String> {
    use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
    let closure = match checking {
        Checking::Every => TCComputation::EnforceAlreadyComputed,
        Checking::Trusted => TCComputation::AssumeAlreadyComputed,
    };
    let added = added.into_iter().map(|entity| Arc::new(entity.as_ref().clone()));
    let extensions = cedar_policy_core::extensions::Extensions::all_available();
    let core = store.as_ref().clone().add_entities(added, None::<&NoEntitiesSchema>, closure, extensions);
    core.map(Entities::from).map_err(|e| e.to_string())
}

/// Stores by user and cluster, at most `capacity` of them.
struct PrincipalCache {
    capacity: usize,
    hasher: RandomState,
    stores: RwLock<HashMap<u64, Arc<PrincipalStore>>>,
}

impl PrincipalCache {
    fn new(capacity: usize) -> Self {
        Self { capacity, hasher: RandomState::new(), stores: RwLock::new(HashMap::new()) }
    }

    /// A digest of everything a store is built from (keyed per process, so no client
    /// can aim for a collision; a collision would only cost a rebuild, see `get`).
    fn key(&self, cluster: &ClusterFacts, principal: &Principal) -> u64 {
        let mut h = self.hasher.build_hasher();
        cluster.hash(&mut h);
        principal.user.hash(&mut h);
        principal.groups.hash(&mut h);
        principal.roles.hash(&mut h);
        h.finish()
    }

    /// The store for exactly this user and cluster, if kept.
    fn get(&self, key: u64, cluster: &ClusterFacts, principal: &Principal) -> Option<Arc<PrincipalStore>> {
        let stores = self.stores.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.get(&key).filter(|s| s.cluster == *cluster && s.principal == *principal).cloned()
    }

    fn insert(&self, key: u64, store: Arc<PrincipalStore>) {
        if self.capacity == 0 {
            return;
        }
        let mut stores = self.stores.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if stores.len() >= self.capacity && !stores.contains_key(&key) {
            // Any one goes: a user who comes back pays one rebuild.
            if let Some(evicted) = stores.keys().next().copied() {
                stores.remove(&evicted);
            }
        }
        stores.insert(key, store);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stores.read().map(|s| s.len()).unwrap_or(0)
    }
}
