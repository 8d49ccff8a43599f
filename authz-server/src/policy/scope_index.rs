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
/// Bytes an action's kept subsets hold, all together (about: each policy's source text
/// plus [`POLICY_OVERHEAD`]). Each subset holds its own copy of every policy in it, text
/// included, and a client choosing the object chooses which per-object policies apply,
/// so a count of subsets alone would let large unscoped policies times 1,024 subsets
/// fill memory.
const BYTES_HELD: usize = 8 << 20;
/// What a policy's copy costs besides its text (its id, annotations, the shared AST's
/// handle), roughly.
const POLICY_OVERHEAD: usize = 256;

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
    /// Each policy's cost in a kept subset.
    sizes: Vec<usize>,
    /// [`BYTES_HELD`] (smaller in tests).
    bytes_held: usize,
}

/// The subsets kept (each with its size), and the bytes they hold.
#[derive(Default)]
struct Subsets {
    sets: HashMap<Vec<u32>, (Arc<PolicySet>, usize)>,
    held: usize,
}

impl Subsets {
    /// Makes room for a subset of `size` bytes within `budget`, evicting as few as it
    /// can (whichever come first: a client cannot aim at one), so that a full cache
    /// still answers the subsets it keeps rather than starting over.
    fn make_room(&mut self, size: usize, budget: usize) {
        while self.sets.len() >= SUBSETS_KEPT || self.held + size > budget {
            let Some(evicted) = self.sets.keys().next().cloned() else { break };
            if let Some((_, freed)) = self.sets.remove(&evicted) {
                self.held -= freed;
            }
        }
    }
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
        Self::holding_at_most(all, BYTES_HELD)
    }

    fn holding_at_most(all: PolicySet, bytes_held: usize) -> Self {
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
        let sizes = policies.iter().map(|p| p.to_string().len() + POLICY_OVERHEAD).collect();
        let subsets = RwLock::default();
        Self { all, policies, resource_in, any_principal, by_principal, subsets, sizes, bytes_held }
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
            return Applicable::Subset(set.0.clone());
        }
        let mut set = PolicySet::new();
        for &i in &chosen {
            if let Some(policy) = self.policies.get(i as usize) {
                // Ids are unique in `all`, so adding cannot fail.
                let _ = set.add(policy.clone());
            }
        }
        let set = Arc::new(set);
        let size = chosen.iter().filter_map(|&i| self.sizes.get(i as usize)).sum();
        // A subset larger than the whole budget is asked without being kept.
        if size <= self.bytes_held {
            let mut subsets = self.subsets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            subsets.make_room(size, self.bytes_held);
            subsets.held += size;
            if let Some((_, replaced)) = subsets.sets.insert(chosen, (set.clone(), size)) {
                subsets.held -= replaced;
            }
        }
        Applicable::Subset(set)
    }

    /// How many distinct subsets are kept.
    #[cfg(test)]
    pub(super) fn subsets_kept(&self) -> usize {
        self.subsets.read().map(|s| s.sets.len()).unwrap_or(0)
    }

    /// How many bytes the kept subsets hold.
    #[cfg(test)]
    pub(super) fn bytes_held(&self) -> usize {
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
    /// own subset (the object's policy plus every unscoped one, each with a long text);
    /// the subsets kept must stay within the bound on bytes held however many objects
    /// are named, and a full cache must keep answering what it holds, not start over.
    #[test]
    fn subsets_hold_at_most_the_bound_of_bytes() {
        let long = "x".repeat(1000);
        let text: String = (0..40)
            .map(|i| format!("forbid (principal, action, resource == k8s::Resource::\"obj-{i}\");\nforbid (principal, action, resource) when {{ context.time == {i} && context.note == \"{long}\" }};\n"))
            .collect();
        let all = PolicySet::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let bound = 200_000;
        let index = ScopeIndex::holding_at_most(all, bound);
        let principal = [uid("k8s::User::\"u\"")];
        let resource = |i: usize| [uid(&format!("k8s::Resource::\"obj-{i}\"")), uid("k8s::Cluster::\"c\"")];
        let subset = |i: usize| match index.applicable(&principal, &resource(i)) {
            Applicable::Subset(set) => set,
            Applicable::All(_) => panic!("a subset"),
        };
        for i in 0..40 {
            // The object's own policy and the forty unscoped ones.
            assert_eq!(subset(i).policies().count(), 41);
            assert!(index.bytes_held() <= bound, "{} bytes held", index.bytes_held());
            // Each subset is ~50 KB, so about four fit; once full, a new one evicts
            // one, rather than emptying the cache (which would leave one).
            if i >= 4 {
                assert!((2..=4).contains(&index.subsets_kept()), "{} kept after {i}", index.subsets_kept());
            }
        }
        assert!(Arc::ptr_eq(&subset(39), &subset(39)), "the newest subset is answered from the cache");
    }
}
