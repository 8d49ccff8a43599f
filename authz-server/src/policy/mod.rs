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
mod discovery;
mod entities;
mod source;

pub use approval::ApprovalQuestion;
pub use discovery::{DiscoveryQuestion, NOT_PERMITTED as DISCOVERY_NOT_PERMITTED};
pub use entities::{ClusterFacts, Principal, RequestMeta};
pub use source::PolicyError;

use crate::request_info::RequestInfo;
use cedar_policy::{Authorizer, Decision, Effect, PolicyId, PolicySet, Schema};
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
    origins: std::collections::HashMap<PolicyId, String>,
    /// For each action, the policies whose scope can match it: Cedar evaluates every
    /// policy it is given, so a `get` should not pay for `delete`-only guardrails.
    by_action: std::collections::HashMap<&'static str, PolicySet>,
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
        let schema = source::schema()?;
        let (policies, origins) = source::policy_set(sources, BUILT_IN, &schema)?;
        let by_action = partition_by_action(&policies);
        Ok(Self { schema, policies, authorizer: Authorizer::new(), origins, by_action })
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
        let Ok((request, entities)) = entities::fetch_privileges(&self.schema, cluster, principal, meta) else {
            return (BTreeSet::new(), Vec::new());
        };
        let response = self.authorizer.is_authorized(&request, self.for_action("fetchPrivileges"), &entities);
        if response.decision() != Decision::Allow {
            return (BTreeSet::new(), Vec::new());
        }
        let mut levels = BTreeSet::new();
        let mut by = Vec::new();
        for id in response.diagnostics().reason() {
            if let Some(list) = self.policies.annotation(id, LEVELS_ANNOTATION) {
                levels.extend(list.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned));
                by.push(self.describe(id));
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
        match entities::impersonation(&self.schema, cluster, principal, levels, meta) {
            Ok((request, entities)) => self.verdict("impersonate", &request, &entities, NOT_PERMITTED),
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
        match entities::request(&self.schema, cluster, principal, info, levels, meta) {
            Ok((request, entities)) => self.verdict(entities::request_action(info), &request, &entities, NOT_PERMITTED),
            Err(reason) => deny_unevaluable(reason),
        }
    }

    fn for_action(&self, action: &str) -> &PolicySet {
        self.by_action.get(action).unwrap_or(&self.policies)
    }

    /// Cedar's decision as a [`Verdict`]; `not_permitted` is the message when nothing
    /// permits and no forbid decided.
    fn verdict(
        &self,
        action: &str,
        request: &cedar_policy::Request,
        entities: &cedar_policy::Entities,
        not_permitted: &str,
    ) -> Verdict {
        let response = self.authorizer.is_authorized(request, self.for_action(action), entities);
        let diagnostics = response.diagnostics();
        // Cedar skips a policy that fails to evaluate; a skipped forbid must not open the door.
        if let Some(error) = diagnostics.errors().next() {
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
        let forbids: Vec<&PolicyId> = diagnostics
            .reason()
            .filter(|id| self.policies.policy(id).is_some_and(|p| p.effect() == Effect::Forbid))
            .collect();
        let message = forbids
            .iter()
            .find_map(|id| self.policies.annotation(id, ERROR_ANNOTATION))
            .map(str::to_owned)
            .unwrap_or_else(|| match forbids.first() {
                Some(id) => format!("refused by kubegate policy {}", self.describe(id)),
                None => not_permitted.to_owned(),
            });
        Verdict::Deny { message, policies: forbids.iter().map(|id| self.describe(id)).collect() }
    }

    /// `file:line` (and `@id` when the policy has one) of a policy.
    fn describe(&self, id: &PolicyId) -> String {
        self.origins.get(id).cloned().unwrap_or_else(|| id.to_string())
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
mod tests;
