//! The discovery HTTP API under `/kubegate/v1/discovery/` (docs/discovery.md), on
//! authz-server's `apiListen` beside the access-request API. Every call authenticates
//! with the caller's own token and is authorised per cluster by the Cedar action
//! `discover` (no built-in permit). Answers carry the data's freshness; a cluster whose
//! data is not served (not listed yet, or stale past `dropAfter`) is a 503 `Status`.

use super::inventory::{Backing, Grant, Inventory, ObjectRef, Rule, Subject, SubjectKind, SubjectSummary};
use super::state::Freshness;
use super::{ClusterDiscovery, Discovery};
use crate::http_api::{caller, client_address, ApiError};
use crate::oidc::{Identity, TokenValidator};
use crate::policy::{DiscoveryQuestion, Verdict, DISCOVERY_NOT_PERMITTED};
use crate::rules::SharedRules;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The prefix Envoy routes here.
pub const PREFIX: &str = "/kubegate/v1/discovery";

/// What every handler needs.
#[derive(Clone)]
pub struct DiscoveryApi {
    pub validator: Arc<TokenValidator>,
    pub rules: SharedRules,
    pub discovery: Arc<Discovery>,
}

pub fn router(api: DiscoveryApi) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/clusters"), get(clusters))
        .route(&format!("{PREFIX}/subjects"), get(subjects))
        .route(&format!("{PREFIX}/roles"), get(roles))
        .route(&format!("{PREFIX}/rules"), get(rules))
        .route(&format!("{PREFIX}/levels"), get(levels))
        .with_state(api)
}

/// How current an answer's data is.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FreshnessView {
    /// `fresh` or `stale`.
    pub state: &'static str,
    pub synced_at: String,
    pub stale_seconds: i64,
}

/// What every answer about one cluster starts with.
#[derive(Debug, Serialize)]
pub struct Answer<T: Serialize> {
    pub cluster: String,
    pub freshness: FreshnessView,
    #[serde(flatten)]
    pub body: T,
}

/// The cluster a caller asked about, once they may read it and its data is served.
pub struct Authorised<'a> {
    pub cluster: &'a Arc<ClusterDiscovery>,
    pub identity: Arc<Identity>,
}

/// `cluster` named, or the only one; refused unless policy permits `discover` on it.
pub async fn authorise<'a>(
    api: &'a DiscoveryApi,
    headers: &HeaderMap,
    cluster: Option<&str>,
    view: &str,
) -> Result<Authorised<'a>, ApiError> {
    let identity = caller(&api.validator, headers).await?;
    let cluster = authorise_identity(&api.discovery, &api.rules, &identity, cluster, view, &client_address(headers))?;
    Ok(Authorised { cluster, identity })
}

/// [`authorise`] for an identity already known (the console's session). Policy is
/// asked before anything about the cluster is said: a name kubegate does not discover
/// is refused like one the caller may not read, and the choices offered when no
/// cluster is named are those the caller may read, so no cluster's name leaks.
pub fn authorise_identity<'a>(
    discovery: &'a Discovery,
    rules: &SharedRules,
    identity: &Identity,
    cluster: Option<&str>,
    view: &str,
    source_ip: &str,
) -> Result<&'a Arc<ClusterDiscovery>, ApiError> {
    let refuse = |cluster: &str, message: String| {
        tracing::info!(target: "kubegate::audit", event = "discovery_refused", user = %identity.username,
            cluster = ?cluster, view, source = %source_ip, reason = %message);
        ApiError::new(403, message)
    };
    let verdict = |c: &ClusterDiscovery| permits(rules, identity, c.name(), view, source_ip);
    let chosen = match cluster.filter(|n| !n.is_empty()) {
        Some(name) => match discovery.cluster(name) {
            None => return Err(refuse(name, DISCOVERY_NOT_PERMITTED.to_owned())),
            Some(c) => match verdict(c) {
                Verdict::Allow => c,
                Verdict::Deny { message, .. } => return Err(refuse(name, message)),
            },
        },
        None => {
            let all: Vec<&Arc<ClusterDiscovery>> = discovery.clusters().collect();
            if let [only] = all.as_slice() {
                if let Verdict::Deny { message, .. } = verdict(only) {
                    return Err(refuse(only.name(), message));
                }
            }
            let allowed: Vec<&Arc<ClusterDiscovery>> =
                all.into_iter().filter(|c| verdict(c) == Verdict::Allow).collect();
            match allowed.as_slice() {
                [one] => *one,
                [] => return Err(refuse("", DISCOVERY_NOT_PERMITTED.to_owned())),
                several => {
                    let names: Vec<&str> = several.iter().map(|c| c.name()).collect();
                    return Err(ApiError::new(
                        422,
                        format!("name a cluster with ?cluster= (one of: {})", names.join(", ")),
                    ));
                }
            }
        }
    };
    tracing::info!(target: "kubegate::audit", event = "discovery_read", user = %identity.username,
        cluster = chosen.name(), view, source = %source_ip);
    Ok(chosen)
}

/// Whether policy lets `identity` read `view` of `cluster`.
pub fn permits(rules: &SharedRules, identity: &Identity, cluster: &str, view: &str, source_ip: &str) -> Verdict {
    let rules = rules.current();
    let Some(resolver) = rules.clusters.iter().find(|c| c.cluster_name() == cluster) else {
        return Verdict::Deny { message: format!("no cluster {cluster:?}"), policies: vec![] };
    };
    let principal = resolver.principal(identity);
    let question =
        DiscoveryQuestion { cluster: resolver.cluster(), principal: &principal, view, source_ip, now: super::now() };
    rules.policy.discovery(&question)
}

/// The data's freshness, or a 503 when it is not served.
pub fn served(cluster: &ClusterDiscovery) -> Result<FreshnessView, ApiError> {
    let now = super::now();
    match cluster.freshness() {
        Freshness::Fresh => {
            Ok(FreshnessView { state: "fresh", synced_at: crate::access::object::rfc3339(now), stale_seconds: 0 })
        }
        Freshness::Stale { since } => Ok(FreshnessView {
            state: "stale",
            synced_at: crate::access::object::rfc3339(since),
            stale_seconds: now - since,
        }),
        Freshness::Unavailable(why) => {
            Err(ApiError::new(503, format!("no discovery data for cluster {}: {why}", cluster.name())))
        }
    }
}

/// Answers `body(inventory)` with the data's freshness, or a 503 when it is not served.
fn answer<T: Serialize>(cluster: &ClusterDiscovery, body: impl FnOnce(&Inventory) -> Result<T, ApiError>) -> Response {
    let freshness = match served(cluster) {
        Ok(freshness) => freshness,
        Err(e) => return e.into_response(),
    };
    let state = cluster.read();
    match body(state.inventory()) {
        Ok(body) => Json(Answer { cluster: cluster.name().to_owned(), freshness, body }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterParam {
    #[serde(default)]
    pub cluster: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterView {
    cluster: String,
    state: &'static str,
    synced_at: Option<String>,
    stale_seconds: i64,
    objects: Option<super::inventory::Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Every discovered cluster the caller may read, with its freshness.
async fn clusters(State(api): State<DiscoveryApi>, headers: HeaderMap) -> Result<Response, ApiError> {
    let identity = caller(&api.validator, &headers).await?;
    let source_ip = client_address(&headers);
    let now = super::now();
    let views: Vec<ClusterView> = api
        .discovery
        .clusters()
        .filter(|c| permits(&api.rules, &identity, c.name(), "clusters", &source_ip) == Verdict::Allow)
        .map(|c| {
            let state = c.read();
            let counts = Some(state.inventory().counts());
            let (state_name, synced_at, stale_seconds, reason) = match state.freshness(now, c.drop_after) {
                Freshness::Fresh => ("fresh", Some(crate::access::object::rfc3339(now)), 0, None),
                Freshness::Stale { since } => ("stale", Some(crate::access::object::rfc3339(since)), now - since, None),
                Freshness::Unavailable(why) => ("unavailable", None, 0, Some(why)),
            };
            let objects = if state_name == "unavailable" { None } else { counts };
            ClusterView { cluster: c.name().to_owned(), state: state_name, synced_at, stale_seconds, objects, reason }
        })
        .collect();
    if views.is_empty() {
        tracing::info!(target: "kubegate::audit", event = "discovery_refused", user = %identity.username,
            view = "clusters", source = %source_ip, reason = DISCOVERY_NOT_PERMITTED);
        return Err(ApiError::new(403, DISCOVERY_NOT_PERMITTED));
    }
    let names: Vec<&str> = views.iter().map(|v| v.cluster.as_str()).collect();
    tracing::info!(target: "kubegate::audit", event = "discovery_read", user = %identity.username,
        view = "clusters", source = %source_ip, clusters = ?names);
    Ok(Json(serde_json::json!({ "clusters": views })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectsParams {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    search: Option<String>,
}

#[derive(Serialize)]
struct Subjects {
    subjects: Vec<SubjectSummary>,
}

async fn subjects(
    State(api): State<DiscoveryApi>,
    headers: HeaderMap,
    Query(params): Query<SubjectsParams>,
) -> Result<Response, ApiError> {
    let kind = match params.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => None,
        Some("group") => Some(SubjectKind::Group),
        Some("user") => Some(SubjectKind::User),
        Some("serviceaccount") => Some(SubjectKind::ServiceAccount),
        Some(other) => return Err(ApiError::new(422, format!("kind {other:?}: one of group, user, serviceaccount"))),
    };
    let allowed = authorise(&api, &headers, params.cluster.as_deref(), "subjects").await?;
    Ok(answer(allowed.cluster, |inventory| {
        Ok(Subjects { subjects: inventory.subjects(kind, params.search.as_deref()) })
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesParams {
    #[serde(default)]
    cluster: Option<String>,
    subject: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Serialize)]
struct Roles {
    subject: Subject,
    roles: Vec<Grant>,
}

async fn roles(
    State(api): State<DiscoveryApi>,
    headers: HeaderMap,
    Query(params): Query<RolesParams>,
) -> Result<Response, ApiError> {
    let subject = Subject::parse(&params.subject).ok_or_else(|| {
        ApiError::new(
            422,
            format!("subject {:?}: group:NAME, user:NAME or serviceaccount:NAMESPACE:NAME", params.subject),
        )
    })?;
    let allowed = authorise(&api, &headers, params.cluster.as_deref(), "roles").await?;
    let namespace = params.namespace.filter(|n| !n.is_empty());
    Ok(answer(allowed.cluster, |inventory| {
        Ok(Roles { roles: inventory.grants_of(&subject, namespace.as_deref()), subject: subject.clone() })
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesParams {
    #[serde(default)]
    cluster: Option<String>,
    role: String,
}

#[derive(Serialize)]
struct RoleView {
    #[serde(flatten)]
    at: ObjectRef,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    aggregated: bool,
}

#[derive(Serialize)]
struct BoundTo {
    subject: Subject,
    binding: ObjectRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoleRules {
    role: RoleView,
    rules: Vec<Rule>,
    bound_to: Vec<BoundTo>,
}

/// `clusterrole/view` or `role/team-a/dev`.
pub fn parse_role(text: &str) -> Option<ObjectRef> {
    let mut parts = text.split('/');
    let kind = parts.next()?.to_ascii_lowercase();
    let at = match (kind.as_str(), parts.next(), parts.next(), parts.next()) {
        ("clusterrole", Some(name), None, None) => ObjectRef::cluster_role(name),
        ("role", Some(namespace), Some(name), None) if !namespace.is_empty() => ObjectRef::role(namespace, name),
        _ => return None,
    };
    (!at.name.is_empty()).then_some(at)
}

async fn rules(
    State(api): State<DiscoveryApi>,
    headers: HeaderMap,
    Query(params): Query<RulesParams>,
) -> Result<Response, ApiError> {
    let at = parse_role(&params.role).ok_or_else(|| {
        ApiError::new(422, format!("role {:?}: clusterrole/NAME or role/NAMESPACE/NAME", params.role))
    })?;
    let allowed = authorise(&api, &headers, params.cluster.as_deref(), "rules").await?;
    Ok(answer(allowed.cluster, |inventory| {
        let role = inventory
            .roles
            .get(&at)
            .ok_or_else(|| ApiError::new(404, format!("{} does not exist in this cluster", at.describe())))?;
        let bound_to = inventory
            .bound_to(&at)
            .flat_map(|(binding, info)| {
                info.subjects.iter().map(|subject| BoundTo { subject: subject.clone(), binding: binding.clone() })
            })
            .collect();
        Ok(RoleRules {
            role: RoleView {
                at: at.clone(),
                labels: role.labels.clone(),
                annotations: role.annotations.clone(),
                aggregated: role.aggregated,
            },
            rules: role.rules.clone(),
            bound_to,
        })
    }))
}

/// A role a candidate level's group is bound to, with its rules.
#[derive(Serialize)]
pub struct LevelGrant {
    pub role: ObjectRef,
    pub binding: ObjectRef,
    pub scope: String,
    pub rules: Vec<Rule>,
}

/// A group that could be a privilege level.
#[derive(Serialize)]
pub struct Candidate {
    pub group: String,
    /// kubegate's configuration already grants it as a level here.
    pub configured: bool,
    pub grants: Vec<LevelGrant>,
}

/// A configured level that grants nothing here.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unbacked {
    pub level: String,
    pub reason: &'static str,
    pub named_by: Vec<String>,
}

#[derive(Serialize)]
pub struct Levels {
    pub candidates: Vec<Candidate>,
    pub unbacked: Vec<Unbacked>,
}

/// The bound groups as privilege-level suggestions, and the configured levels that
/// nothing backs. One pass over the bindings (a cluster may have tens of thousands).
pub fn level_report(inventory: &Inventory, configured: &BTreeMap<String, super::levels::ConfiguredLevel>) -> Levels {
    let mut by_group: BTreeMap<&str, Vec<LevelGrant>> = BTreeMap::new();
    for (at, binding) in &inventory.bindings {
        let groups: std::collections::BTreeSet<&str> =
            binding.groups().filter(|g| !crate::config::is_reserved_name(g)).collect();
        for group in groups {
            by_group.entry(group).or_default().push(LevelGrant {
                role: binding.role.clone(),
                binding: at.clone(),
                scope: at.namespace.clone(),
                rules: inventory.roles.get(&binding.role).map(|r| r.rules.clone()).unwrap_or_default(),
            });
        }
    }
    let candidates = by_group
        .into_iter()
        .map(|(group, grants)| Candidate {
            group: group.to_owned(),
            configured: configured.contains_key(group),
            grants,
        })
        .collect();
    let unbacked = configured
        .iter()
        .filter_map(|(level, config)| match inventory.backing(level) {
            Backing::Backed => None,
            Backing::Unbacked(reason) => {
                Some(Unbacked { level: level.clone(), reason, named_by: config.named_by.clone() })
            }
        })
        .collect();
    Levels { candidates, unbacked }
}

async fn levels(
    State(api): State<DiscoveryApi>,
    headers: HeaderMap,
    Query(params): Query<ClusterParam>,
) -> Result<Response, ApiError> {
    let allowed = authorise(&api, &headers, params.cluster.as_deref(), "levels").await?;
    let configured = allowed.cluster.configured_levels();
    Ok(answer(allowed.cluster, |inventory| Ok(level_report(inventory, &configured))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_forms_parse_and_bad_ones_do_not() {
        assert_eq!(parse_role("clusterrole/view"), Some(ObjectRef::cluster_role("view")));
        assert_eq!(
            parse_role("ClusterRole/system:aggregate-to-view"),
            Some(ObjectRef::cluster_role("system:aggregate-to-view"))
        );
        assert_eq!(parse_role("role/team-a/dev"), Some(ObjectRef::role("team-a", "dev")));
        for bad in ["view", "clusterrole/", "role/dev", "role//dev", "role/a/b/c", "rolebinding/a/b", "clusterrole/a/b"]
        {
            assert_eq!(parse_role(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_level_report_suggests_bound_groups_and_names_unbacked_levels() {
        let inventory = crate::discovery::inventory::tests::sample();
        let configured = BTreeMap::from([
            ("viewers".to_string(), super::super::levels::ConfiguredLevel::default()),
            (
                "auditors".to_string(),
                super::super::levels::ConfiguredLevel { named_by: vec!["role audit".into()], standing: vec![] },
            ),
        ]);
        let report = serde_json::to_value(level_report(&inventory, &configured)).unwrap_or_default();
        let groups: Vec<&str> =
            report["candidates"].as_array().into_iter().flatten().filter_map(|c| c["group"].as_str()).collect();
        assert_eq!(groups, ["engineering", "ghosts", "viewers"]);
        assert_eq!(report["candidates"][2]["configured"], true);
        assert_eq!(report["candidates"][2]["grants"][0]["rules"][0]["verbs"][0], "get");
        assert_eq!(report["unbacked"][0]["level"], "auditors");
        assert_eq!(report["unbacked"][0]["namedBy"][0], "role audit");
    }
}
