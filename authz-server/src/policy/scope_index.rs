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
/// Policies held by an action's kept subsets, all together: each subset holds its own
/// copy of every policy in it (source text included), and a client choosing the object
/// chooses which per-object policies apply, so a count of subsets alone would let many
/// large unscoped policies times 1,024 subsets fill memory.
const POLICIES_HELD: usize = 100_000;

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
    subsets: RwLock<Subsets>,
    /// [`POLICIES_HELD`] (smaller in tests).
    policies_held: usize,
}

/// The subsets kept, and how many policies they hold.
#[derive(Default)]
struct Subsets {
    sets: HashMap<Vec<u32>, Arc<PolicySet>>,
    held: usize,
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
        Self::holding_at_most(all, POLICIES_HELD)
    }

    fn holding_at_most(all: PolicySet, policies_held: usize) -> Self {
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
        Self { all, policies, resource_in, any_principal, by_principal, subsets: RwLock::default(), policies_held }
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
        if let Some(set) = self.subsets.read().unwrap_or_else(std::sync::PoisonError::into_inner).sets.get(&chosen) {
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
        if subsets.sets.len() >= SUBSETS_KEPT || subsets.held + chosen.len() > self.policies_held {
            *subsets = Subsets::default();
        }
        if chosen.len() <= self.policies_held {
            subsets.held += chosen.len();
            if let Some(replaced) = subsets.sets.insert(chosen, set.clone()) {
                subsets.held -= replaced.policies().count();
            }
        }
        Applicable::Subset(set)
    }

    /// How many distinct subsets are kept.
    #[cfg(test)]
    pub(super) fn subsets_kept(&self) -> usize {
        self.subsets.read().map(|s| s.sets.len()).unwrap_or(0)
    }

    /// How many policies the kept subsets hold.
    #[cfg(test)]
    pub(super) fn policies_held(&self) -> usize {
        self.subsets.read().map(|s| s.held).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn uid(text: &str) -> EntityUid {
        EntityUid::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Attack: a client names a different object with every request, each making its
    /// own subset (the object's policy plus every unscoped one); the subsets kept must
    /// stay within the bound on policies held however many objects are named.
    #[test]
    fn subsets_hold_at_most_the_bound_of_policies() {
        let text: String = (0..40)
            .map(|i| format!("forbid (principal, action, resource == k8s::Resource::\"obj-{i}\");\nforbid (principal, action, resource) when {{ context.time == {i} }};\n"))
            .collect();
        let all = PolicySet::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let index = ScopeIndex::holding_at_most(all, 200);
        let principal = [uid("k8s::User::\"u\"")];
        for i in 0..40 {
            let resource = [uid(&format!("k8s::Resource::\"obj-{i}\"")), uid("k8s::Cluster::\"c\"")];
            let Applicable::Subset(set) = index.applicable(&principal, &resource) else { panic!("a subset") };
            // The object's own policy and the forty unscoped ones.
            assert_eq!(set.policies().count(), 41);
            assert!(index.policies_held() <= 200, "{} held", index.policies_held());
        }
        assert!(index.subsets_kept() >= 1);
    }
}
