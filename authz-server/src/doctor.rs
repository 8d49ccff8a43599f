//! `kubegate doctor`: what an operator checks before (and whenever) users complain. Each
//! finding is one line, green, yellow or red, and every red one says what to do.
//!
//! It reads authz-server's configuration and checks what the running gateway depends on:
//! the configuration and policies load; each issuer's discovery document and signing
//! keys can be fetched; and, for every cluster with an `upstream`, the API server answers
//! the gateway over a CA that matches, the gateway's token is one that rotates, and the
//! gateway may impersonate everything a decision can carry (SelfSubjectAccessReviews
//! asked as the gateway, as kube-apiserver's impersonation filter will ask its
//! authorizer), and every privilege level roles or policies can grant there is bound by
//! some RoleBinding or ClusterRoleBinding (the discovery work should reuse this check).

use crate::config::{ClusterConfig, Config, IdentityMode, UpstreamConfig};
use crate::oidc::JwksCache;
use crate::rbac_model::GroupBindings;
use crate::rules::Rules;
use crate::upstream_health::{check_once, send, UpstreamError};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Green,
    /// Works, but something will bite later.
    Yellow,
    /// Broken: users are refused, or will be.
    Red,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub health: Health,
    /// What was checked (`cluster prod: impersonate uids`).
    pub check: String,
    /// What was found, and for yellow and red what to do.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.health {
            Health::Green => "ok  ",
            Health::Yellow => "warn",
            Health::Red => "FAIL",
        };
        write!(f, "{mark} {}: {}", self.check, self.detail)
    }
}

fn finding(health: Health, check: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding { health, check: check.into(), detail: detail.into() }
}

/// Every check, in report order; with `envoy_admin` (Envoy's admin address, on
/// loopback in the gateway's pod), also Envoy's routes against the clusters.
pub async fn examine(config: &Config, envoy_admin: Option<&str>) -> Vec<Finding> {
    let (loaded, rules) = policies(config);
    let mut findings = vec![loaded];
    if let Some(admin) = envoy_admin {
        findings.push(envoy_routes_check(config, admin).await);
    }
    for issuer in &config.issuers {
        findings.push(issuer_keys(issuer).await);
    }
    let policy_levels = rules.map(|r| r.policy.levels_policies_may_add()).unwrap_or_default();
    for cluster in &config.clusters {
        let mut levels: BTreeSet<String> = config
            .roles
            .iter()
            .filter(|role| role.applies_to(&cluster.name))
            .flat_map(|role| role.privilege_levels.iter().cloned())
            .collect();
        levels.extend(policy_levels.iter().cloned());
        findings.extend(cluster_checks(cluster, &levels).await);
    }
    findings
}

/// Envoy's running routes: each cluster's name to an upstream of its own, with a token
/// of its own, nothing routed without a decision, a client's copy of the cluster header
/// removed before routing.
async fn envoy_routes_check(config: &Config, admin: &str) -> Finding {
    let check = "Envoy routes";
    let url = format!("{}/config_dump", admin.trim_end_matches('/'));
    let dump: Value = match reqwest::get(&url).await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(e) => return finding(Health::Red, check, format!("{url}: {}", crate::error_text::causes(&e))),
    };
    let bootstrap = dump["configs"].as_array().into_iter().flatten().find(|c| c.get("bootstrap").is_some());
    let Some(resources) = bootstrap.map(|c| &c["bootstrap"]["static_resources"]) else {
        return finding(Health::Red, check, format!("{url} has no bootstrap configuration"));
    };
    let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    match crate::envoy_routes::check(resources, &names).as_slice() {
        [] => finding(
            Health::Green,
            check,
            format!("each of {} routes to an upstream and a token of its own", names.join(", ")),
        ),
        problems => {
            let all: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
            finding(Health::Red, check, all.join("; "))
        }
    }
}

fn policies(config: &Config) -> (Finding, Option<Rules>) {
    match Rules::from_config(config) {
        Ok(rules) => {
            let detail = format!(
                "{} cluster(s), {} role(s), {} policy(ies) load",
                config.clusters.len(),
                config.roles.len(),
                rules.policy.len()
            );
            (finding(Health::Green, "configuration", detail), Some(rules))
        }
        Err(e) => (finding(Health::Red, "configuration", format!("{e}; fix it before the gateway reloads it")), None),
    }
}

async fn issuer_keys(issuer: &crate::config::IssuerConfig) -> Finding {
    let check = format!("issuer {}", issuer.url);
    let cache = match JwksCache::new(issuer) {
        Ok(cache) => cache,
        Err(e) => return finding(Health::Red, check, e.to_string()),
    };
    match cache.refresh().await {
        Ok(_) => finding(Health::Green, check, "discovery document and signing keys fetched"),
        Err(e) => finding(
            Health::Red,
            check,
            format!("{e}; the gateway keeps cached keys for a while, but new pods cannot verify tokens"),
        ),
    }
}

async fn cluster_checks(cluster: &ClusterConfig, levels: &BTreeSet<String>) -> Vec<Finding> {
    let name = &cluster.name;
    let Some(upstream) = &cluster.upstream else {
        let detail = "no `upstream` configured, so nothing about this cluster can be checked from here";
        return vec![finding(Health::Yellow, format!("cluster {name}"), detail)];
    };
    let reach = match check_once(upstream).await {
        Ok(()) => finding(Health::Green, format!("cluster {name}: API server"), "answers the gateway"),
        Err(e) => {
            let red = finding(Health::Red, format!("cluster {name}: API server"), advice(&e));
            // Nothing else can be asked of an API server that does not answer.
            if !matches!(e, UpstreamError::Forbidden(_)) {
                return vec![red, token_rotation(name, upstream)];
            }
            red
        }
    };
    let mut findings = vec![reach, token_rotation(name, upstream)];
    for (what, resource) in impersonated(cluster) {
        findings.push(may_impersonate(name, upstream, what, resource).await);
    }
    findings.extend(levels_bound(name, upstream, levels).await);
    findings
}

/// A privilege level is a Kubernetes group: one no RoleBinding or ClusterRoleBinding
/// names grants nothing today, and whatever a binding made later grants (yellow: it
/// works, but the level is not what its name promises).
async fn levels_bound(cluster: &str, upstream: &UpstreamConfig, levels: &BTreeSet<String>) -> Vec<Finding> {
    if levels.is_empty() {
        return Vec::new();
    }
    let all = format!("cluster {cluster}: privilege levels");
    let mut lists = Vec::new();
    for resource in ["clusterrolebindings", "rolebindings"] {
        let path = format!("/apis/rbac.authorization.k8s.io/v1/{resource}");
        match send(upstream, reqwest::Method::GET, &path, None).await {
            Ok((200, list)) => lists.push(list),
            Ok((status, _)) => {
                let detail = format!("cannot list {resource} ({status}), so bindings cannot be checked: grant the gateway `list` on rolebindings and clusterrolebindings (the chart's rbac.discovery)");
                return vec![finding(Health::Yellow, all, detail)];
            }
            Err(e) => return vec![finding(Health::Red, all, advice(&e))],
        }
    }
    let [cluster_role_bindings, role_bindings]: [Value; 2] = match lists.try_into() {
        Ok(pair) => pair,
        Err(_) => return vec![finding(Health::Red, all, "the binding lists could not be read")],
    };
    let bindings = match GroupBindings::from_lists(cluster_role_bindings, role_bindings) {
        Ok(bindings) => bindings,
        Err(e) => return vec![finding(Health::Red, all, e.to_string())],
    };
    let unbound = "no RoleBinding or ClusterRoleBinding names this group: it grants nothing now, and whatever a later binding gives";
    levels
        .iter()
        .map(|level| {
            let check = format!("cluster {cluster}: level {level}");
            match bindings.of(level) {
                [first, rest @ ..] => {
                    let more = if rest.is_empty() { String::new() } else { format!(" and {} more", rest.len()) };
                    finding(Health::Green, check, format!("bound by {}{more}", first.describe()))
                }
                [] => finding(Health::Yellow, check, unbound),
            }
        })
        .collect()
}

fn advice(error: &UpstreamError) -> String {
    let fix = match error {
        UpstreamError::Unreachable(reason) if reason.contains("certificate") => {
            "the API server's certificate does not chain to the configured caFile: use the cluster's CA"
        }
        UpstreamError::Unreachable(_) => "check the server URL and the network path from the gateway's pod",
        UpstreamError::Unauthorized => "the token or client certificate is not valid for this cluster",
        UpstreamError::Forbidden(_) => "the chart's ClusterRole grants this; was it removed?",
        UpstreamError::File { .. } => "mount the credential where the configuration says",
        UpstreamError::Client(_) | UpstreamError::Status(_) => "see the API server's logs",
    };
    format!("{error}: {fix}")
}

/// A projected service-account token expires and is rotated by kubelet; a token that
/// never expires is a long-lived Secret, valid for anyone who copies it.
fn token_rotation(cluster: &str, upstream: &UpstreamConfig) -> Finding {
    let check = format!("cluster {cluster}: gateway token");
    let Some(path) = upstream.token_file() else {
        return finding(Health::Green, check, "a client certificate, no token");
    };
    let token = match std::fs::read_to_string(&path) {
        Ok(token) => token,
        Err(e) => return finding(Health::Red, check, format!("{}: {e}", path.display())),
    };
    let claims = token
        .trim()
        .split('.')
        .nth(1)
        .and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    match claims.as_ref().and_then(|c| c.get("exp")).and_then(Value::as_u64) {
        Some(exp) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let left = exp.saturating_sub(now);
            finding(Health::Green, check, format!("expires in {} min; kubelet rotates it", left / 60))
        }
        None => finding(
            Health::Yellow,
            check,
            "it never expires (a long-lived Secret token?): use a projected service-account token, which rotates",
        ),
    }
}

/// What the gateway must be able to impersonate on this cluster: (what, resource).
fn impersonated(cluster: &ClusterConfig) -> Vec<(String, Value)> {
    let attributes = |group: &str, resource: &str, subresource: &str| json!({"verb": "impersonate", "group": group, "resource": resource, "subresource": subresource});
    let extras = kubegate_decision::EXTRA_KEYS
        .iter()
        .map(|key| (format!("userextras/{key}"), attributes("authentication.k8s.io", "userextras", key)));
    match cluster.identity_mode {
        IdentityMode::Leased => Vec::new(),
        IdentityMode::Impersonate => [
            ("users".to_string(), attributes("", "users", "")),
            ("groups".to_string(), attributes("", "groups", "")),
            ("uids".to_string(), attributes("authentication.k8s.io", "uids", "")),
        ]
        .into_iter()
        .chain(extras)
        .collect(),
        // The gateway's own user name: a service account, or a user.
        IdentityMode::LeasedWithLevels => {
            let user = match cluster.gateway_user.strip_prefix("system:serviceaccount:") {
                Some(_) => ("serviceaccounts".to_string(), attributes("", "serviceaccounts", "")),
                None => ("users".to_string(), attributes("", "users", "")),
            };
            [user, ("groups".to_string(), attributes("", "groups", ""))].into_iter().chain(extras).collect()
        }
    }
}

async fn may_impersonate(cluster: &str, upstream: &UpstreamConfig, what: String, attributes: Value) -> Finding {
    let check = format!("cluster {cluster}: impersonate {what}");
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes}});
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    match send(upstream, reqwest::Method::POST, path, Some(&review)).await {
        Ok((201 | 200, answer)) if answer["status"]["allowed"] == true => finding(Health::Green, check, "allowed"),
        Ok((201 | 200, _)) => finding(
            Health::Red,
            check,
            format!("not allowed: every request would be refused by the API server; grant the gateway `impersonate` on `{what}` (the chart's ClusterRole does)"),
        ),
        Ok((status, _)) => finding(Health::Red, check, format!("the SelfSubjectAccessReview was answered {status}")),
        Err(e) => finding(Health::Red, check, advice(&e)),
    }
}
