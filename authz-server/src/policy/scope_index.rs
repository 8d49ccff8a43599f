//! Which of an action's policies can apply to a question, from their scopes alone.
//!
//! Cedar evaluates every policy it is given. Operators scope policies to the people and
//! clusters they are about (`permit (principal in k8s::Role::"oncall", action ==
//! k8s::Action::"fetchPrivileges", resource in k8s::Cluster::"prod")`), and with a
//! thousand such permits every user paid for all thousand (profiled: most of a decision
//! at 10,000 policies). A policy whose scope names an entity the principal (or the
//! resource) is not, and is not in, cannot apply: Cedar evaluates the scope before the
//! condition, so leaving that policy out changes no decision, reason or error.
//!
//! The entities a principal is `in` are exactly the user, their groups and their roles
//! (groups and roles have no parents in kubegate's entities); a resource is in itself
//! and its cluster. The subsets are kept, by the policies they hold: users with the same
//! groups and roles share one.

use cedar_policy::{EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Below this many policies an action's whole set is evaluated: choosing costs more.
const INDEXED_FROM: usize = 32;
/// Distinct subsets kept per action.
const SUBSETS_KEPT: usize = 1024;

/// One action's policies, indexed by the entities their scopes name.
pub(super) struct ScopeIndex {
    all: PolicySet,
    policies: Vec<Policy>,
    /// The entity each policy's resource scope needs the resource to be or be in.
    resource_in: Vec<Option<EntityUid>>,
    /// Policies whose principal scope names no entity.
    any_principal: Vec<u32>,
    /// Policies by the entity their principal scope needs the principal to be or be in.
    by_principal: HashMap<EntityUid, Vec<u32>>,
    subsets: RwLock<HashMap<Vec<u32>, Arc<PolicySet>>>,
}

/// The policies a question is asked of.
pub(super) enum Applicable<'a> {
    All(&'a PolicySet),
    Subset(Arc<PolicySet>),
}

impl std::ops::Deref for Applicable<'_> {
    type Target = PolicySet;
    fn deref(&self) -> &PolicySet {
        match self {
            Applicable::All(set) => set,
            Applicable::Subset(set) => set,
        }
    }
}

impl ScopeIndex {
    pub(super) fn new(all: PolicySet) -> Self {
        let policies: Vec<Policy> = all.policies().cloned().collect();
        let mut any_principal = Vec::new();
        let mut by_principal: HashMap<EntityUid, Vec<u32>> = HashMap::new();
        let mut resource_in = Vec::with_capacity(policies.len());
        for (index, policy) in (0u32..).zip(&policies) {
            match policy.principal_constraint() {
                PrincipalConstraint::In(uid) | PrincipalConstraint::Eq(uid) | PrincipalConstraint::IsIn(_, uid) => {
                    by_principal.entry(uid).or_default().push(index)
                }
                PrincipalConstraint::Any | PrincipalConstraint::Is(_) => any_principal.push(index),
            }
            resource_in.push(match policy.resource_constraint() {
                ResourceConstraint::In(uid) | ResourceConstraint::Eq(uid) | ResourceConstraint::IsIn(_, uid) => {
                    Some(uid)
                }
                ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
            });
        }
        Self { all, policies, resource_in, any_principal, by_principal, subsets: RwLock::new(HashMap::new()) }
    }

    /// Every policy of the action.
    pub(super) fn all(&self) -> &PolicySet {
        &self.all
    }

    /// The policies whose scope can hold for a principal in `principal` (the user, their
    /// groups and roles) and a resource in `resource` (itself and its cluster).
    pub(super) fn applicable(&self, principal: &[EntityUid], resource: &[EntityUid]) -> Applicable<'_> {
        if self.policies.len() < INDEXED_FROM {
            return Applicable::All(&self.all);
        }
        let named = principal.iter().filter_map(|uid| self.by_principal.get(uid)).flatten();
        let mut chosen: Vec<u32> = self
            .any_principal
            .iter()
            .chain(named)
            .copied()
            .filter(|&i| {
                self.resource_in
                    .get(i as usize)
                    .is_some_and(|scope| scope.as_ref().is_none_or(|r| resource.contains(r)))
            })
            .collect();
        chosen.sort_unstable();
        chosen.dedup();
        if chosen.len() == self.policies.len() {
            return Applicable::All(&self.all);
        }
        if let Some(set) = self.subsets.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&chosen) {
            return Applicable::Subset(set.clone());
        }
        let mut set = PolicySet::new();
        for &i in &chosen {
            if let Some(policy) = self.policies.get(i as usize) {
                // Ids are unique in `all`, so adding cannot fail.
                let _ = set.add(policy.clone());
            }
        }
        let set = Arc::new(set);
        let mut subsets = self.subsets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if subsets.len() >= SUBSETS_KEPT {
            subsets.clear();
        }
        subsets.insert(chosen, set.clone());
        Applicable::Subset(set)
    }

    /// How many distinct subsets are kept.
    #[cfg(test)]
    pub(super) fn subsets_kept(&self) -> usize {
        self.subsets.read().map(|s| s.len()).unwrap_or(0)
    }
}
