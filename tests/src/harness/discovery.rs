//! Resource discovery in a test stack: authz-server's `discovery` settings, the read
//! rules the chart's `rbac.discovery` gives the gateway at the cluster, and the policy
//! that lets an admin read what was discovered.

use super::{Rule, GATEWAY_USER};

/// Turns discovery on in a stack (with `access_requests`, which gives authz-server its
/// `apiListen` and the cluster's upstream).
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// `discovery.dropAfter`: how long a stale cluster's data is still served.
    pub drop_after: String,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self { drop_after: "6h".into() }
    }
}

/// The `discovery:` settings.
pub fn authz_yaml(options: &DiscoveryOptions) -> String {
    format!("discovery:\n  dropAfter: {}\n", options.drop_after)
}

/// What the chart's `rbac.discovery` ClusterRole grants the gateway
/// (deploy/helm/kubegate/templates/rbac.yaml), no more.
pub fn gateway_rules() -> Vec<Rule> {
    let rule = |api_group: &str, resources: &[&str]| Rule {
        users: vec![GATEWAY_USER.into()],
        groups: vec![],
        verbs: ["get", "list", "watch"].map(String::from).to_vec(),
        api_groups: vec![api_group.into()],
        resources: resources.iter().map(|r| r.to_string()).collect(),
        namespaces: vec![],
        non_resource_urls: vec![],
    };
    vec![
        rule("rbac.authorization.k8s.io", &["roles", "rolebindings", "clusterroles", "clusterrolebindings"]),
        rule("", &["namespaces", "serviceaccounts"]),
    ]
}

/// A policy letting IdP group `leads` (CAROL) read discovery on every cluster.
pub const LEADS_DISCOVER: &str =
    "permit (principal in k8s::Group::\"leads\", action == k8s::Action::\"discover\", resource);\n";
