//! Cedar policy: loading and validating policy files against kubegate's schema
//! (`authz-server/policy/kubegate.cedarschema`), and answering the five questions
//! kubegate asks of them:
//!
//! * [`PolicyEngine::fetch_privileges`]: which privilege levels do `permit` policies on
//!   `fetchPrivileges` add for this user (their `@k8s_impersonate_groups` annotations)?
//! * [`PolicyEngine::check_impersonation`]: does a `forbid` on `impersonate` veto the
//!   resolved levels (`context.k8s.groups`)?
//! * [`PolicyEngine::authorize_request`]: does a `forbid` refuse this Kubernetes request?
//! * [`PolicyEngine::approval`]: does a `permit` on `approve` approve this access
//!   request (by this approver, or automatically), with no `forbid` against it?
//! * [`PolicyEngine::discovery`]: does a `permit` on `discover` let this user read what
//!   resource discovery learned of a cluster's RBAC?
//!
//! kubegate adds two built-in `permit` policies (every request, every impersonation),
//! so policies only need to say what to forbid; Kubernetes RBAC still decides what the
//! impersonated identity may do. There is none for `approve` or `discover`: approving grants
//! privilege and discovery maps it, so each needs a policy that says so. A policy that fails to evaluate counts
//! as a refusal.

mod approval;
mod context;
mod discovery;
mod entities;
mod entity_store;
mod scope_index;
mod source;

pub use approval::ApprovalQuestion;
pub use discovery::{DiscoveryQuestion, NOT_PERMITTED as DISCOVERY_NOT_PERMITTED};
pub use entities::{ClusterFacts, Principal, RequestMeta};
pub use source::PolicyError;

use crate::request_info::RequestInfo;
use cedar_policy::{Authorizer, Decision, Effect, PolicyId, PolicySet, Schema};
use entity_store::{Asked, Assembly, Checking, EntityStores, Question};
use scope_index::{Applicable, ScopeIndex};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// kubegate's Cedar schema.
pub const SCHEMA: &str = include_str!("../../policy/kubegate.cedarschema");

/// Appended to every policy set: allow unless a policy forbids.
const BUILT_IN: &str = r#"
@id("kubegate-allow-requests")
permit (principal, action in k8s::Action::"request", resource);
@id("kubegate-allow-impersonation")
permit (principal, action == k8s::Action::"impersonate", resource);
"#;

/// The annotation on `fetchPrivileges` permits that lists levels to add.
const LEVELS_ANNOTATION: &str = "k8s_impersonate_groups";
/// The annotation whose text is the message a refused user sees.
const ERROR_ANNOTATION: &str = "error";
/// The levels a `@k8s_impersonate_groups` annotation lists.
fn level_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
}

/// A refusal's message when no policy permits (and no forbid decided).
const NOT_PERMITTED: &str = "no kubegate policy permits this request";

/// What policy said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused: the message for the user, and the ids of the policies that decided.
    Deny {
        message: String,
        policies: Vec<String>,
    },
}

/// A validated policy set.
pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
    /// Where each policy came from, for messages.
    origins: std::collections::HashMap<PolicyId, source::Origin>,
    /// For each action, the policies whose scope can match it: Cedar evaluates every
    /// policy it is given, so a `get` should not pay for `delete`-only guardrails.
    by_action: std::collections::HashMap<&'static str, ScopeIndex>,
    /// The users' entity stores (one per user and cluster, shared by their questions).
    stores: EntityStores,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("policies", &self.len()).finish()
    }
}

impl PolicyEngine {
    /// Loads and validates policy files (one set for every cluster: a policy names the
    /// clusters it is about).
    pub fn load(files: &[PathBuf]) -> Result<Self, PolicyError> {
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| PolicyError::Read { file: file.display().to_string(), reason: e.to_string() })?;
            sources.push((file.display().to_string(), text));
        }
        Self::from_sources(&sources)
    }

    /// Validates policy texts, each named for messages.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, PolicyError> {
        Self::assembled(sources, Assembly::Shared(Checking::for_this_build()), entity_store::DEFAULT_CAPACITY)
    }

    fn assembled(sources: &[(String, String)], assembly: Assembly, capacity: usize) -> Result<Self, PolicyError> {
        let schema = source::schema()?;
        let (policies, origins) = source::policy_set(sources, BUILT_IN, &schema)?;
        let by_action = partition_by_action(&policies).into_iter().map(|(a, set)| (a, ScopeIndex::new(set))).collect();
        let stores = EntityStores::new(&schema, assembly, capacity).map_err(PolicyError::Schema)?;
        Ok(Self { schema, policies, authorizer: Authorizer::new(), origins, by_action, stores })
    }

    /// `question` about `principal` on `cluster`, against their (shared) entity store.
    fn ask(
        &self,
        cluster: &ClusterFacts,
        principal: &Principal,
        question: Result<Question<'_>, String>,
    ) -> Result<Asked, String> {
        let store = self.stores.principal(&self.schema, cluster, principal)?;
        self.stores.ask(&self.schema, store, question?)
    }

    /// The number of policies loaded from files (the built-in ones not counted).
    pub fn len(&self) -> usize {
        self.policies.policies().count() - 2
    }

    /// Every level a `fetchPrivileges` policy can add (its `@k8s_impersonate_groups`),
    /// whatever its conditions: what `doctor` checks the cluster binds.
    pub fn levels_policies_may_add(&self) -> BTreeSet<String> {
        self.policies
            .policies()
            .filter_map(|p| p.annotation(LEVELS_ANNOTATION))
            .flat_map(|list| list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned))
            .collect()
    }

    /// [`Self::levels_policies_may_add`], each with the policies (`file:line`) that add it.
    pub fn levels_policies_may_add_by_origin(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut levels: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for policy in self.policies.policies() {
            let Some(list) = policy.annotation(LEVELS_ANNOTATION) else { continue };
            for level in list.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                levels.entry(level.to_owned()).or_default().push(self.describe(policy.id()));
            }
        }
        levels
    }

    /// True when no file policy is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The privilege levels `fetchPrivileges` permits add for `principal`, sorted, and
    /// the policies that added them.
    pub fn fetch_privileges(
        &self,
        cluster: &ClusterFacts,
        principal: &Principal,
        meta: &RequestMeta,
    ) -> (BTreeSet<String>, Vec<String>) {
        let Ok(asked) = self.ask(cluster, principal, entities::fetch_privileges(meta)) else {
            return (BTreeSet::new(), Vec::new());
        };
        let policies = self.for_action("fetchPrivileges", &asked);
        let response = self.authorizer.is_authorized(&asked.request, &policies, asked.entities());
        if response.decision() != Decision::Allow {
            return (BTreeSet::new(), Vec::new());
        }
        let mut levels = BTreeSet::new();
        let mut by = Vec::new();
        for id in self.in_file_order(response.diagnostics().reason()) {
            if let Some(origin) = self.origins.get(id).filter(|o| !o.levels.is_empty()) {
                levels.extend(origin.levels.iter().cloned());
                by.push(origin.label.clone());
            }
        }
        (levels, by)
    }

    /// Whether the resolved `levels` may be impersonated for `principal`.
    pub fn check_impersonation(
        &self,
        cluster: &ClusterFacts,
        principal: &Principal,
        levels: &BTreeSet<String>,
        meta: &RequestMeta,
    ) -> Verdict {
        match self.ask(cluster, principal, entities::impersonation(levels, meta)) {
            Ok(asked) => self.verdict("impersonate", &asked, NOT_PERMITTED),
            Err(reason) => deny_unevaluable(reason),
        }
    }

    /// Whether a Kubernetes request may proceed.
    pub fn authorize_request(
        &self,
        cluster: &ClusterFacts,
        principal: &Principal,
        info: &RequestInfo,
        levels: &BTreeSet<String>,
        meta: &RequestMeta,
    ) -> Verdict {
        match self.ask(cluster, principal, entities::request(cluster, info, levels, meta)) {
            Ok(asked) => self.verdict(entities::request_action(info), &asked, NOT_PERMITTED),
            Err(reason) => deny_unevaluable(reason),
        }
    }

    /// The policies that can apply to `asked` (its action's, whose scopes can hold).
    fn for_action(&self, action: &str, asked: &Asked) -> Applicable<'_> {
        match self.by_action.get(action) {
            // The reference the shortcuts are tested against asks every policy.
            Some(index) if self.stores.assembly() == Assembly::Direct => Applicable::All(index.all()),
            Some(index) => index.applicable(asked.principal_in(), asked.resource_in()),
            None => Applicable::All(&self.policies),
        }
    }

    /// Cedar's decision as a [`Verdict`]; `not_permitted` is the message when nothing
    /// permits and no forbid decided.
    fn verdict(&self, action: &str, asked: &Asked, not_permitted: &str) -> Verdict {
        let policies = self.for_action(action, asked);
        let response = self.authorizer.is_authorized(&asked.request, &policies, asked.entities());
        let diagnostics = response.diagnostics();
        // Cedar skips a policy that fails to evaluate; a skipped forbid must not open the door.
        let mut errors: Vec<_> = diagnostics.errors().collect();
        errors.sort_by_key(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| self.order(e.policy_id()));
        if let Some(error) = errors.first() {
            return Verdict::Deny {
                message: format!("a kubegate policy could not be evaluated ({error}); refusing"),
                policies: vec![match error {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(e) => self.describe(e.policy_id()),
                }],
            };
        }
        if response.decision() == Decision::Allow {
            return Verdict::Allow;
        }
        let forbids: Vec<&PolicyId> = self
            .in_file_order(diagnostics.reason())
            .into_iter()
            .filter(|id| self.origins.get(*id).is_some_and(|o| o.forbid))
            .collect();
        let message =
            forbids.iter().find_map(|id| self.origins.get(*id).and_then(|o| o.error.clone())).unwrap_or_else(|| {
                match forbids.first() {
                    Some(id) => format!("refused by kubegate policy {}", self.describe(id)),
                    None => not_permitted.to_owned(),
                }
            });
        Verdict::Deny { message, policies: forbids.iter().map(|id| self.describe(id)).collect() }
    }

    /// Policy ids in the order they were written: Cedar reports the policies that
    /// decided as a set, and a refusal's message (the first forbid's `@error`) and the
    /// levels' `granted_by` must not depend on a hash order.
    fn in_file_order<'a>(&self, ids: impl Iterator<Item = &'a PolicyId>) -> Vec<&'a PolicyId> {
        let mut ids: Vec<&PolicyId> = ids.collect();
        ids.sort_by_key(|id| self.order(id));
        ids
    }

    fn order(&self, id: &PolicyId) -> (usize, usize) {
        self.origins.get(id).map_or((usize::MAX, 0), |origin| origin.order)
    }

    /// `file:line` (and `@id` when the policy has one) of a policy.
    fn describe(&self, id: &PolicyId) -> String {
        self.origins.get(id).map_or_else(|| id.to_string(), |origin| origin.label.clone())
    }
}

/// Actions with no built-in permit, that an unscoped `permit` does not open.
const GUARDED_ACTIONS: [&str; 2] = [approval::ACTION, discovery::ACTION];

/// Splits the set by the actions each policy's scope can match (`action`,
/// `action == A`, `action in [A, B]`, `action in k8s::Action::"request"`).
///
/// One exception to Cedar's reading: a `permit` with an unscoped `action` is left out
/// of `approve`. Before `approve` existed such a permit changed nothing (kubegate
/// permits requests and impersonation anyway), so files have them; counting it would
/// turn `permit (principal, action, resource);` into "everyone approves everything,
/// their own requests included, automatically". A permit that approves must name
/// `k8s::Action::"approve"` in its scope. Unscoped forbids do apply to `approve`.
/// `discover` is read the same way: such a permit must not show everyone the
/// cluster's RBAC.
fn partition_by_action(policies: &PolicySet) -> std::collections::HashMap<&'static str, PolicySet> {
    use cedar_policy::ActionConstraint;
    let all: Vec<&'static str> = entities::REQUEST_ACTIONS
        .iter()
        .copied()
        .chain(["fetchPrivileges", "impersonate", approval::ACTION, discovery::ACTION])
        .collect();
    let mut sets: std::collections::HashMap<&'static str, PolicySet> =
        all.iter().map(|a| (*a, PolicySet::new())).collect();
    for policy in policies.policies() {
        let named: Vec<String> = match policy.action_constraint() {
            ActionConstraint::Any => all
                .iter()
                .filter(|a| !(GUARDED_ACTIONS.contains(*a) && policy.effect() == Effect::Permit))
                .map(|a| a.to_string())
                .collect(),
            ActionConstraint::Eq(uid) => vec![uid.id().unescaped().to_string()],
            ActionConstraint::In(uids) => uids.iter().map(|u| u.id().unescaped().to_string()).collect(),
        };
        for name in named {
            let targets: Vec<&'static str> = if name == "request" {
                entities::REQUEST_ACTIONS.to_vec()
            } else {
                all.iter().copied().filter(|a| *a == name).collect()
            };
            for target in targets {
                if let Some(set) = sets.get_mut(target) {
                    // A policy named twice (`in [get, get]`) is already there.
                    let _ = set.add(policy.clone());
                }
            }
        }
    }
    sets
}

fn deny_unevaluable(reason: String) -> Verdict {
    Verdict::Deny {
        message: format!("kubegate could not evaluate its policy for this request ({reason}); refusing"),
        policies: vec![],
    }
}

#[cfg(test)]
mod approval_tests;
#[cfg(test)]
mod store_equivalence_tests;
#[cfg(test)]
mod tests;
