//! `kubegate-authz-server policy check`: what the gateway would decide for a user and a
//! request, and why, without a token or a running gateway. For operators debugging
//! roles and policies.

use crate::cluster_selection::{refuse_prefix_in_path, ClusterSelector, PATH_PREFIX};
use crate::config::Config;
use crate::oidc::Identity;
use crate::policy::{PolicyEngine, PolicyError, RequestMeta, Verdict};
use crate::privilege::{PrivilegeResolver, Refused};
use crate::request_info::{self, KubeRequest, RequestInfo};
use std::fmt::Write;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("--request must be `METHOD /path[?query]`, got {0:?}")]
    Request(String),
    #[error(transparent)]
    Unparsable(#[from] request_info::RequestInfoError),
    #[error("{0}")]
    Cluster(String),
}

/// The decision, and a report a person reads.
pub struct Explanation {
    pub allowed: bool,
    pub report: String,
}

/// Evaluates `request` (`GET /api/v1/namespaces/default/pods`) for `user` in `groups`.
pub fn explain(
    config: &Config,
    user: &str,
    groups: &[String],
    request: &str,
    source_ip: &str,
    cluster: Option<&str>,
) -> Result<Explanation, ExplainError> {
    let (method, target) = request.trim().split_once(' ').ok_or_else(|| ExplainError::Request(request.to_owned()))?;
    let target = target.trim();
    // Read as the gateway reads it: the cluster prefix, then kube-apiserver's reading.
    let (cluster, target) = pick_cluster(config, cluster, target)?;
    let read = KubeRequest::read(method, &target)?;
    refuse_prefix_in_path(&read.target.path).map_err(|e| ExplainError::Cluster(e.to_string()))?;
    let info = read.info.clone();
    let policy = PolicyEngine::load(&config.policy_paths()?)?;
    let resolver = PrivilegeResolver::new(config.roles.clone(), cluster.clone());
    let identity = Identity { username: user.to_owned(), groups: groups.to_vec(), uid: None, expires_at: u64::MAX };
    let time =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (path, query) = (read.target.path.clone(), read.target.query.canonical());
    let meta = RequestMeta { source_ip: source_ip.to_owned(), time, path, query };
    let principal = resolver.principal(&identity);

    let mut report = String::new();
    let _ = writeln!(report, "request:    {method} {target}");
    let _ = writeln!(report, "            {}", describe(&info));
    let _ = writeln!(report, "user:       {user} (IdP groups: {})", list(groups.iter()));
    let _ = writeln!(report, "roles:      {}", list(principal.roles.iter()));
    let _ = writeln!(report, "cluster:    {}", cluster.name);
    let _ = writeln!(report, "policies:   {} loaded", policy.len());
    let privileges = match resolver.resolve(&principal, &policy, &meta, None, &[]) {
        Ok(privileges) => privileges,
        Err(refused) => {
            let why = match refused {
                Refused::Vetoed(message) | Refused::NotANarrowing(message) => message,
            };
            let _ = writeln!(
                report,
                "decision:   DENY (privilege levels vetoed by an impersonate forbid)\nmessage:    {why}"
            );
            return Ok(Explanation { allowed: false, report });
        }
    };
    let _ = writeln!(report, "levels:     {}", list(privileges.levels.iter()));
    if !privileges.granted_by.is_empty() {
        let _ = writeln!(report, "            added by {}", privileges.granted_by.join(", "));
    }
    // A PUT may create its object (create-on-update): asked as `create` too, as the gateway does.
    let as_create = (method == "PUT").then(|| info.as_create()).flatten();
    let verdict = std::iter::once(&info)
        .chain(as_create.as_ref())
        .map(|info| policy.authorize_request(resolver.cluster(), &principal, info, &privileges.levels, &meta))
        .find(|v| matches!(v, Verdict::Deny { .. }))
        .unwrap_or(Verdict::Allow);
    match verdict {
        Verdict::Allow => {
            let identity = match resolver.impersonation(&identity, &privileges, "policy-check") {
                Some(i) => format!("as {} with groups {}", i.user, list(i.groups.iter())),
                None => "under the gateway's own credential, no impersonation".into(),
            };
            let _ = writeln!(
                report,
                "decision:   ALLOW by kubegate; forwarded {identity}\n            (Kubernetes RBAC decides next)"
            );
            Ok(Explanation { allowed: true, report })
        }
        Verdict::Deny { message, policies } => {
            let _ = writeln!(report, "decision:   DENY by {}\nmessage:    {message}", list(policies.iter()));
            Ok(Explanation { allowed: false, report })
        }
    }
}

/// The cluster asked about and the target without its prefix: the one `/clusters/<name>`
/// names (which must agree with `--cluster`), the one `--cluster` names, or the only one.
fn pick_cluster<'a>(
    config: &'a Config,
    name: Option<&str>,
    target: &str,
) -> Result<(&'a crate::config::ClusterConfig, String), ExplainError> {
    let names = || config.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let unreadable = |e: crate::cluster_selection::SelectionError| ExplainError::Cluster(e.to_string());
    if target.starts_with(PATH_PREFIX) {
        let selection = ClusterSelector::new(&config.clusters).select("", "", target).map_err(unreadable)?;
        let cluster = config.clusters.get(selection.index).ok_or_else(|| ExplainError::Cluster(names()))?;
        if name.is_some_and(|n| n != cluster.name) {
            return Err(ExplainError::Cluster(format!(
                "--cluster {} and the path prefix disagree",
                name.unwrap_or_default()
            )));
        }
        return Ok((cluster, selection.target));
    }
    let cluster = match (name, config.clusters.as_slice()) {
        (Some(name), _) => config.cluster(name).ok_or_else(|| {
            ExplainError::Cluster(format!("--cluster {name}: no such cluster (configured: {})", names()))
        })?,
        (None, [only]) => only,
        (None, _) => {
            return Err(ExplainError::Cluster(format!("name the cluster with --cluster (one of: {})", names())))
        }
    };
    Ok((cluster, target.to_owned()))
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let items: Vec<&str> = items.map(String::as_str).collect();
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn describe(info: &RequestInfo) -> String {
    match info {
        RequestInfo::Resource(r) => {
            let group = if r.api_group.is_empty() { "core".to_string() } else { r.api_group.clone() };
            let scope = if r.namespace.is_empty() {
                "cluster-scoped".to_string()
            } else {
                format!("namespace {}", r.namespace)
            };
            let sub = if r.subresource.is_empty() { String::new() } else { format!("/{}", r.subresource) };
            let name = if r.name.is_empty() { String::new() } else { format!(" {:?}", r.name) };
            format!("verb {} on {}{}{} ({} {}, {})", r.verb, r.resource, sub, name, group, r.api_version, scope)
        }
        RequestInfo::NonResource { verb, path } => format!("verb {verb} on non-resource URL {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `policy check` reads a request as the gateway does: the cluster from its prefix,
    /// the path decoded (`kube%2Dsystem` is kube-system), a doubled prefix refused.
    #[test]
    fn checks_a_request_as_the_gateway_reads_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("guard.cedar"),
            "@error(\"no deletes in kube-system on prod\")\nforbid (principal, action == k8s::Action::\"delete\", resource in k8s::Cluster::\"prod\")\nwhen { resource is k8s::Resource && resource.namespace == \"kube-system\" };\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("authz.yaml");
        std::fs::write(&path, "policyFiles: [guard.cedar]\nclusters: [{name: dev}, {name: prod}]\nissuers:\n- url: https://idp\n  audiences: [k]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let check = |request: &str, cluster: Option<&str>| {
            explain(&config, "alice@example.com", &[], request, "127.0.0.1", cluster)
        };
        let prod = check("DELETE /clusters/prod/api/v1/namespaces/kube%2Dsystem/pods/dns", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!prod.allowed && prod.report.contains("cluster:    prod"), "{}", prod.report);
        let dev = check("DELETE /clusters/dev/api/v1/namespaces/kube-system/pods/dns", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dev.allowed, "{}", dev.report);
        assert!(check("GET /clusters/dev/clusters/prod/api", None).is_err());
        assert!(check("GET /clusters/dev/api", Some("prod")).is_err(), "prefix and --cluster disagree");
        assert!(check("GET /api", None).is_err(), "two clusters, none named");
    }

    #[test]
    fn explains_an_allow_and_a_deny() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("guard.cedar"),
            "@error(\"no deletes in kube-system\")\nforbid (principal, action == k8s::Action::\"delete\", resource)\nwhen { resource is k8s::Resource && resource.namespace == \"kube-system\" };\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("authz.yaml");
        std::fs::write(&path, "policyFiles: [guard.cedar]\nroles:\n- name: engineering\n  members: {groups: [engineering]}\n  privilegeLevels: [engineering]\nissuers:\n- url: https://idp\n  audiences: [k]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let groups = vec!["engineering".to_string()];
        let allow =
            explain(&config, "alice@example.com", &groups, "GET /api/v1/namespaces/default/pods", "127.0.0.1", None)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(allow.allowed, "{}", allow.report);
        assert!(allow.report.contains("verb list on pods (core v1, namespace default)"), "{}", allow.report);
        assert!(allow.report.contains("levels:     engineering"), "{}", allow.report);
        let deny = explain(
            &config,
            "alice@example.com",
            &groups,
            "DELETE /api/v1/namespaces/kube-system/pods/dns",
            "127.0.0.1",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!deny.allowed);
        assert!(deny.report.contains("guard.cedar:1"), "{}", deny.report);
        assert!(deny.report.contains("message:    no deletes in kube-system"), "{}", deny.report);
    }

    /// Attack: getting round documented guardrails by another route to the same
    /// effect: evicting instead of deleting in kube-system, `kubectl debug` (an
    /// ephemeral container) or attach instead of exec, the kubelet's own exec through
    /// `nodes/proxy`, and a shell the deny-list did not spell (`/bin/sh`, `env sh`).
    /// The guardrails of docs/policy.md must stop each.
    #[test]
    fn the_documented_guardrails_stop_eviction_debug_containers_node_proxy_and_other_shells() {
        let doc = include_str!("../../docs/policy.md");
        let guardrails = doc
            .split("```cedar")
            .filter_map(|rest| rest.split("```").next())
            .find(|block| block.contains("no-delete-in-kube-system"))
            .unwrap_or_else(|| panic!("docs/policy.md has the guardrails block"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("guardrails.cedar"), guardrails).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("authz.yaml");
        std::fs::write(&path, "policyFiles: [guardrails.cedar]\nroles:\n- name: oncall\n  members: {groups: [oncall]}\n  privilegeLevels: [oncall]\nissuers:\n- url: https://idp\n  audiences: [k]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let decide = |groups: &[&str], request: &str| {
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            explain(&config, "alice@example.com", &groups, request, "192.0.2.10", None)
                .unwrap_or_else(|e| panic!("{request}: {e}"))
        };
        let refused = [
            "DELETE /api/v1/namespaces/kube-system/pods/coredns",
            "POST /api/v1/namespaces/kube-system/pods/coredns/eviction",
            "POST /api/v1/namespaces/payments/pods/api/exec?command=date",
            "GET /api/v1/namespaces/payments/pods/api/attach?stdin=true&tty=true",
            "PATCH /api/v1/namespaces/payments/pods/api/ephemeralcontainers",
            "PUT /api/v1/namespaces/payments/pods/api/ephemeralcontainers",
            "GET /api/v1/nodes/node-1/proxy/exec/payments/api/app?command=sh",
            "POST /api/v1/nodes/node-1:10250/proxy/run/payments/api/app?cmd=sh",
            "GET /api/v1/proxy/nodes/node-1/exec/payments/api/app?command=sh",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=sh",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=/bin/sh",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=env&command=sh",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=busybox&command=sh",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=lsof",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=python3&command=-c&command=x",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=tar&command=cf&command=-",
            "GET /api/v1/namespaces/prod/pods/web/attach?stdin=true",
            "PATCH /api/v1/namespaces/prod/pods/web/ephemeralcontainers",
        ];
        for request in refused {
            let decision = decide(&[], request);
            assert!(!decision.allowed, "{request}:\n{}", decision.report);
        }
        for request in [
            "GET /api/v1/namespaces/prod/pods/web/exec?command=ls&command=-la",
            "GET /api/v1/namespaces/prod/pods/web/exec?command=date",
            "GET /api/v1/namespaces/kube-system/pods/coredns",
            "GET /api/v1/nodes/node-1",
        ] {
            let decision = decide(&[], request);
            assert!(decision.allowed, "{request}:\n{}", decision.report);
        }
        for request in [
            "GET /api/v1/namespaces/prod/pods/web/exec?command=/bin/sh",
            "PATCH /api/v1/namespaces/payments/pods/api/ephemeralcontainers",
            "GET /api/v1/namespaces/payments/pods/api/exec?command=sh",
        ] {
            let decision = decide(&["oncall"], request);
            assert!(decision.allowed, "oncall, {request}:\n{}", decision.report);
        }
        let node = decide(&["oncall"], "GET /api/v1/nodes/node-1/proxy/exec/payments/api/app?command=sh");
        assert!(!node.allowed && node.report.contains("kubelet API"), "{}", node.report);
    }
}
