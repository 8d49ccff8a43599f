//! An RBAC table keyed on the impersonated user and groups: the answer kube-apiserver's
//! RBAC authorizer would give for the rules configured.

use super::identity::UserInfo;
use super::request_info::RequestInfo;
use serde::{Deserialize, Serialize};

/// One rule: who (users or groups) may do what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub verbs: Vec<String>,
    /// API groups (`""` is core); `*` matches all. Default: core.
    #[serde(default = "core_group")]
    pub api_groups: Vec<String>,
    /// `pods`, `pods/log`, `*`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Empty: every namespace and cluster scope.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `/version`, `/apis/*`.
    #[serde(default)]
    pub non_resource_urls: Vec<String>,
}

fn core_group() -> Vec<String> {
    vec![String::new()]
}

/// Who may impersonate what: RBAC's `impersonate` verb, granted to users or groups of
/// callers, on `users`, `groups`, `serviceaccounts` (core API group), `uids` and
/// `userextras/<key>` (`authentication.k8s.io`), or `*` for all of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Impersonator {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub resources: Vec<String>,
}

/// The API group kube-apiserver asks RBAC about for each impersonated resource.
pub fn impersonation_group(resource: &str) -> &'static str {
    if resource == "uids" || resource.starts_with("userextras") {
        "authentication.k8s.io"
    } else {
        ""
    }
}

impl Impersonator {
    /// The RBAC rules this grant amounts to (one per API group it touches).
    pub fn rules(&self) -> Vec<Rule> {
        let mut by_group: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for resource in &self.resources {
            let groups: &[&str] =
                if resource == "*" { &["", "authentication.k8s.io"] } else { &[impersonation_group(resource)] };
            for group in groups {
                by_group.entry(group).or_default().push(resource.clone());
            }
        }
        by_group
            .into_iter()
            .map(|(group, resources)| Rule {
                users: self.users.clone(),
                groups: self.groups.clone(),
                verbs: vec!["impersonate".into()],
                api_groups: vec![group.to_owned()],
                resources,
                namespaces: vec![],
                non_resource_urls: vec![],
            })
            .collect()
    }
}

/// What every authenticated user may do in a stock cluster (the `system:discovery`,
/// `system:basic-user` and `system:public-info-viewer` bootstrap roles).
pub fn bootstrap_rules() -> Vec<Rule> {
    let authenticated = vec!["system:authenticated".to_string()];
    vec![
        Rule {
            users: vec![],
            groups: authenticated.clone(),
            verbs: vec!["get".into()],
            api_groups: vec![],
            resources: vec![],
            namespaces: vec![],
            non_resource_urls: [
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/version",
                "/healthz",
                "/livez",
                "/readyz",
                "/openapi/*",
            ]
            .map(String::from)
            .to_vec(),
        },
        Rule {
            users: vec![],
            groups: authenticated,
            verbs: vec!["create".into()],
            api_groups: vec!["authentication.k8s.io".into(), "authorization.k8s.io".into()],
            resources: vec![
                "selfsubjectreviews".into(),
                "selfsubjectaccessreviews".into(),
                "selfsubjectrulesreviews".into(),
            ],
            namespaces: vec![],
            non_resource_urls: vec![],
        },
    ]
}

/// True when some rule allows `user` to do `request`.
pub fn allows(rules: &[Rule], user: &UserInfo, request: &RequestInfo) -> bool {
    rules.iter().any(|rule| rule_applies_to(rule, user) && rule_covers(rule, request))
}

fn rule_applies_to(rule: &Rule, user: &UserInfo) -> bool {
    rule.users.contains(&user.username) || rule.groups.iter().any(|g| user.groups.contains(g))
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

fn rule_covers(rule: &Rule, request: &RequestInfo) -> bool {
    match request {
        RequestInfo::NonResource { verb, path } => {
            matches(&rule.verbs, verb)
                && rule.non_resource_urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => u == path,
                })
        }
        RequestInfo::Resource { verb, group, namespace, resource, subresource, .. } => {
            let full = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.clone(),
            };
            let namespace_ok =
                rule.namespaces.is_empty() || namespace.as_ref().is_some_and(|ns| rule.namespaces.contains(ns));
            matches(&rule.verbs, verb)
                && matches(&rule.api_groups, group)
                && matches(&rule.resources, &full)
                && namespace_ok
        }
    }
}

/// The message kube-apiserver's RBAC authorizer gives for a refusal.
pub fn forbidden_message(user: &UserInfo, request: &RequestInfo) -> String {
    match request {
        RequestInfo::NonResource { verb, path } => {
            format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", user.username)
        }
        RequestInfo::Resource { verb, group, namespace, resource, subresource, name } => {
            let full = subresource.as_ref().map(|s| format!("{resource}/{s}")).unwrap_or_else(|| resource.clone());
            let target = match name {
                Some(n) => format!("{full} \"{n}\""),
                None => full.clone(),
            };
            let scope = match namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".into(),
            };
            format!(
                "{target} is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}",
                user.username
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::request_info::parse;
    use super::*;
    use std::collections::BTreeMap;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn answers_by_user_and_group() {
        let mut rules = bootstrap_rules();
        rules.push(Rule {
            users: vec![],
            groups: vec!["engineering".into()],
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            api_groups: core_group(),
            resources: vec!["pods".into(), "pods/log".into()],
            namespaces: vec![],
            non_resource_urls: vec![],
        });
        let list = parse("GET", "/api/v1/namespaces/default/pods", None);
        assert!(allows(&rules, &user("alice", &["engineering", "system:authenticated"]), &list));
        assert!(!allows(&rules, &user("bob", &["system:authenticated"]), &list));
        assert!(allows(&rules, &user("bob", &["system:authenticated"]), &parse("GET", "/version", None)));
        assert!(!allows(&rules, &user("bob", &[]), &parse("GET", "/version", None)));
        let msg = forbidden_message(&user("bob", &[]), &list);
        assert_eq!(msg, "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
    }
}
