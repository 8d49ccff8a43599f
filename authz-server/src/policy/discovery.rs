//! The `discover` question: may this principal read what resource discovery learned of
//! a cluster's RBAC (docs/discovery.md)?
//!
//! What a cluster's roles and bindings say is a map of who can do what there: worth
//! guarding like approvals. So, as for `approve`, kubegate adds no built-in `permit`,
//! and an unscoped `permit (principal, action, resource)` does not count (see
//! `partition_by_action`): only a permit naming `k8s::Action::"discover"` opens it.

use super::{entities, ClusterFacts, PolicyEngine, Principal, Verdict};

/// The Cedar action name (`k8s::Action::"discover"`).
pub(super) const ACTION: &str = "discover";

/// What a refusal says when no policy permits and no forbid with an `@error` decided.
pub const NOT_PERMITTED: &str =
    "no kubegate policy permits you to read this cluster's discovered RBAC (Cedar action \"discover\")";

/// One discovery read to decide.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryQuestion<'a> {
    pub cluster: &'a ClusterFacts,
    pub principal: &'a Principal,
    /// What is asked (`clusters`, `subjects`, `roles`, `rules`, `levels`): `context.view`.
    pub view: &'a str,
    /// The caller's address as Envoy saw it (`context.sourceIp`).
    pub source_ip: &'a str,
    /// Seconds since the Unix epoch (`context.time`).
    pub now: i64,
}

impl PolicyEngine {
    /// Whether policy permits this read: only when a policy permits it and no `forbid`
    /// applies.
    pub fn discovery(&self, question: &DiscoveryQuestion<'_>) -> Verdict {
        match self.ask(question.cluster, question.principal, entities::discovery(question)) {
            Ok(asked) => self.verdict(ACTION, &asked, NOT_PERMITTED),
            Err(reason) => super::deny_unevaluable(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(text: &str) -> PolicyEngine {
        PolicyEngine::from_sources(&[("p.cedar".to_owned(), text.to_owned())]).unwrap_or_else(|e| panic!("policy: {e}"))
    }

    fn ask(engine: &PolicyEngine, user: &str, groups: &[&str], cluster: &str) -> Verdict {
        let cluster = ClusterFacts { name: cluster.into(), tags: Default::default() };
        let principal =
            Principal { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), roles: vec![] };
        engine.discovery(&DiscoveryQuestion {
            cluster: &cluster,
            principal: &principal,
            view: "subjects",
            source_ip: "10.0.0.1",
            now: 0,
        })
    }

    /// Attack: reading the cluster's RBAC map without being an admin, where the only
    /// policy is the common "allow everything" one written before `discover` existed.
    #[test]
    fn nothing_is_permitted_without_a_policy_naming_discover() {
        let open = engine("permit (principal, action, resource);");
        assert!(matches!(ask(&open, "mallory", &[], "dev"), Verdict::Deny { .. }));
        let none = engine("forbid (principal, action == k8s::Action::\"get\", resource) when { false };");
        let Verdict::Deny { message, .. } = ask(&none, "mallory", &[], "dev") else { panic!("allowed") };
        assert!(message.contains("discover"), "{message}");
    }

    #[test]
    fn a_permit_naming_discover_admits_its_principals_only() {
        let policy = engine(
            "permit (principal in k8s::Group::\"admins\", action == k8s::Action::\"discover\", resource == k8s::Cluster::\"dev\");",
        );
        assert_eq!(ask(&policy, "alice", &["admins"], "dev"), Verdict::Allow);
        assert!(matches!(ask(&policy, "alice", &["admins"], "prod"), Verdict::Deny { .. }));
        assert!(matches!(ask(&policy, "bob", &["engineering"], "dev"), Verdict::Deny { .. }));
    }

    #[test]
    fn a_forbid_with_an_error_refuses_with_its_message() {
        let policy = engine(
            "permit (principal, action == k8s::Action::\"discover\", resource);\n\
             @error(\"discovery only from the office\")\n\
             forbid (principal, action, resource) unless { context.sourceIp.isInRange(ip(\"192.168.0.0/16\")) };",
        );
        let Verdict::Deny { message, .. } = ask(&policy, "alice", &[], "dev") else { panic!("allowed") };
        assert_eq!(message, "discovery only from the office");
    }

    #[test]
    fn policies_can_tell_the_views_apart() {
        let policy = engine(
            "permit (principal, action == k8s::Action::\"discover\", resource) when { context.view == \"subjects\" };",
        );
        assert_eq!(ask(&policy, "alice", &[], "dev"), Verdict::Allow);
    }

    #[test]
    fn the_documented_discovery_examples_validate_and_admit_whom_they_say() {
        let doc = include_str!("../../../docs/discovery.md");
        let blocks: Vec<&str> = doc.split("```cedar").skip(1).filter_map(|rest| rest.split("```").next()).collect();
        assert!(!blocks.is_empty(), "docs/discovery.md has cedar examples");
        let all = blocks.concat();
        let policy = engine(&all);
        assert_eq!(ask(&policy, "ann", &["platform-admins"], "prod"), Verdict::Allow);
        assert!(matches!(ask(&policy, "lee", &["leads"], "prod"), Verdict::Deny { .. }), "prod has no staging tag");
    }
}
