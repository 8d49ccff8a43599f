//! The Cedar entities and contexts of kubegate's questions: the user's entities, and for
//! each question its action, resource and context (`entity_store` puts them together).

use super::entity_store::{Question, Resource};
use crate::request_info::{Query, RequestInfo, StreamRequest};
use cedar_policy::{Context, Entity, EntityTypeName, EntityUid, RestrictedExpression};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

/// Who is asking: the user, their IdP groups and the standing roles they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

/// The cluster a question is about: its name, and the tags it and every resource in it
/// carry (`resource.getTag("env")`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClusterFacts {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

impl ClusterFacts {
    fn tags(&self) -> impl Iterator<Item = (String, RestrictedExpression)> + '_ {
        self.tags.iter().map(|(k, v)| (k.clone(), string(v)))
    }
}

/// Facts about the request besides its target.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The client's address, as Envoy saw it.
    pub source_ip: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// The path as the API server decodes it.
    pub path: String,
    /// The query in canonical form (the pairs the API server reads, re-encoded).
    pub query: String,
}

/// kubegate's entity types, parsed once: `EntityTypeName::from_str` runs Cedar's
/// parser, which cost more than the rest of building a request (profiled: about a
/// fifth of a decision).
static ENTITY_TYPES: LazyLock<HashMap<&'static str, EntityTypeName>> = LazyLock::new(|| {
    ["User", "Group", "Role", "Cluster", "Resource", "NonResourceURL", "Action"]
        .into_iter()
        .filter_map(|kind| EntityTypeName::from_str(&format!("k8s::{kind}")).ok().map(|name| (kind, name)))
        .collect()
});

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = ENTITY_TYPES.get(kind).cloned().ok_or_else(|| format!("unknown entity type k8s::{kind}"))?;
    Ok(EntityUid::from_type_name_and_id(kind, cedar_policy::EntityId::new(id)))
}

fn action(name: &str) -> Result<EntityUid, String> {
    uid("Action", name)
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

/// Addresses whose `ip(...)` expression is kept, per thread.
const IP_EXPRESSIONS_KEPT: usize = 4096;

thread_local! {
    static IP_EXPRESSIONS: RefCell<HashMap<String, RestrictedExpression>> = RefCell::new(HashMap::new());
}

/// `ip("<value>")`. `RestrictedExpression::new_ip` runs Cedar's parser on the name `ip`
/// every time (its lexer builds a regex matcher per call: a tenth of a decision,
/// profiled), so each thread keeps the expressions of the addresses it has seen.
pub(super) fn ip(value: &str) -> RestrictedExpression {
    // An unparsable address becomes the unspecified one rather than an evaluation error.
    let value = if value.parse::<std::net::IpAddr>().is_ok() { value } else { "0.0.0.0" };
    IP_EXPRESSIONS.with_borrow_mut(|kept| {
        if let Some(expression) = kept.get(value) {
            return expression.clone();
        }
        if kept.len() >= IP_EXPRESSIONS_KEPT {
            kept.clear();
        }
        let expression = RestrictedExpression::new_ip(value);
        kept.insert(value.to_owned(), expression.clone());
        expression
    })
}

fn levels_record(levels: &BTreeSet<String>) -> RestrictedExpression {
    let set = RestrictedExpression::new_set(levels.iter().map(|l| string(l)));
    RestrictedExpression::new_record([("groups".to_string(), set)])
        .unwrap_or_else(|_| RestrictedExpression::new_bool(false))
}

/// The user (in their groups and roles), those groups and roles, and the cluster.
pub(super) fn principal_entities(
    principal: &Principal,
    cluster: &ClusterFacts,
) -> Result<(EntityUid, EntityUid, Vec<Entity>), String> {
    let user = uid("User", &principal.user)?;
    let cluster_uid = uid("Cluster", &cluster.name)?;
    let mut parents = HashSet::new();
    let cluster_entity =
        Entity::new_with_tags(cluster_uid.clone(), [], [], cluster.tags()).map_err(|e| e.to_string())?;
    let mut entities = vec![cluster_entity];
    for group in &principal.groups {
        let g = uid("Group", group)?;
        parents.insert(g.clone());
        entities.push(Entity::new_no_attrs(g, HashSet::new()));
    }
    for role in &principal.roles {
        let r = uid("Role", role)?;
        parents.insert(r.clone());
        entities.push(Entity::new_no_attrs(r, HashSet::new()));
    }
    let attrs = HashMap::from([("name".to_string(), string(&principal.user))]);
    entities.push(Entity::new(user.clone(), attrs, parents).map_err(|e| e.to_string())?);
    Ok((user, cluster_uid, entities))
}

/// The context record (checked against the schema for the action where `Request::new`
/// is given the schema).
fn context(pairs: Vec<(&str, RestrictedExpression)>) -> Result<Context, String> {
    Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v))).map_err(|e| e.to_string())
}

fn base_context(meta: &RequestMeta) -> Vec<(&'static str, RestrictedExpression)> {
    vec![("sourceIp", ip(&meta.source_ip)), ("time", RestrictedExpression::new_long(meta.time))]
}

/// `fetchPrivileges` on the cluster.
pub(super) fn fetch_privileges(meta: &RequestMeta) -> Result<Question, String> {
    Ok(Question {
        action: action("fetchPrivileges")?,
        resource: Resource::Cluster,
        context: context(base_context(meta))?,
    })
}

/// `impersonate` the resolved `levels` on the cluster.
pub(super) fn impersonation(levels: &BTreeSet<String>, meta: &RequestMeta) -> Result<Question, String> {
    let mut pairs = base_context(meta);
    pairs.push(("k8s", levels_record(levels)));
    Ok(Question { action: action("impersonate")?, resource: Resource::Cluster, context: context(pairs)? })
}

/// Every action in group `request` (the schema's request verbs).
pub(super) const REQUEST_ACTIONS: [&str; 14] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "post",
    "put",
    "head",
    "options",
    "other",
];

/// The action for a RequestInfo verb.
pub(super) fn request_action(info: &RequestInfo) -> &'static str {
    let verb = match info {
        RequestInfo::Resource(r) => r.verb.as_str(),
        RequestInfo::NonResource { verb, .. } => verb.as_str(),
    };
    match verb {
        "get" => "get",
        "list" => "list",
        "watch" => "watch",
        "create" => "create",
        "update" => "update",
        "patch" => "patch",
        "delete" => "delete",
        "deletecollection" => "deletecollection",
        "proxy" => "proxy",
        "post" => "post",
        "put" => "put",
        "head" => "head",
        "options" => "options",
        _ => "other",
    }
}

/// The request's verb on its resource (an object or a URL in the cluster).
pub(super) fn request(
    cluster: &ClusterFacts,
    info: &RequestInfo,
    levels: &BTreeSet<String>,
    meta: &RequestMeta,
) -> Result<Question, String> {
    let parents = [uid("Cluster", &cluster.name)?];
    let entity = |resource: &EntityUid, attrs| {
        Entity::new_with_tags(resource.clone(), attrs, parents.clone(), cluster.tags()).map_err(|e| e.to_string())
    };
    let resource = match info {
        RequestInfo::Resource(r) => {
            // A proxy's name is the object proxied to (`vault-0:8200` is pod `vault-0`).
            let name = info.proxied_object().unwrap_or(&r.name);
            let id = format!("{}/{}/{}/{}/{}", r.api_group, r.resource, r.namespace, name, r.subresource);
            let resource = uid("Resource", &id)?;
            let attrs = HashMap::from([
                ("apiGroup".to_string(), string(&r.api_group)),
                ("resource".to_string(), string(&r.resource)),
                ("subresource".to_string(), string(&r.subresource)),
                ("namespace".to_string(), string(&r.namespace)),
                ("name".to_string(), string(name)),
            ]);
            entity(&resource, attrs)?
        }
        RequestInfo::NonResource { path, .. } => {
            let resource = uid("NonResourceURL", path)?;
            let attrs = HashMap::from([("path".to_string(), string(path))]);
            entity(&resource, attrs)?
        }
    };
    let action = action(request_action(info))?;
    let verb = match info {
        RequestInfo::Resource(r) => r.verb.clone(),
        RequestInfo::NonResource { verb, .. } => verb.clone(),
    };
    // `meta.query` is canonical, so reading it again gives exactly what was decided on;
    // only exec, attach and port-forward need it.
    let stream = if StreamRequest::applies_to(info) {
        Query::parse(&meta.query).ok().and_then(|query| StreamRequest::from_request(info, &query)).unwrap_or_default()
    } else {
        StreamRequest::default()
    };
    let request_record = RestrictedExpression::new_record([
        ("verb".to_string(), string(&verb)),
        ("path".to_string(), string(&meta.path)),
        ("query".to_string(), string(&meta.query)),
        ("command".to_string(), string(&stream.command)),
        ("container".to_string(), string(&stream.container)),
    ])
    .map_err(|e| e.to_string())?;
    let mut pairs = base_context(meta);
    pairs.push(("k8s", levels_record(levels)));
    pairs.push(("request", request_record));
    Ok(Question { action, resource: Resource::Entity(Box::new(resource)), context: context(pairs)? })
}

/// The `approve` question: the approver (or, for an automatic approval, the requester)
/// with their groups and roles, the cluster the levels are requested on, and the
/// request and the time in the context.
pub(super) fn approval(
    question: &super::ApprovalQuestion<'_>,
    now: super::approval::UtcTime,
) -> Result<Question, String> {
    let action = action(super::approval::ACTION)?;
    let request = RestrictedExpression::new_record([
        ("requester".to_string(), string(question.requester)),
        ("levels".to_string(), RestrictedExpression::new_set(question.levels.iter().map(|l| string(l)))),
        ("durationSeconds".to_string(), RestrictedExpression::new_long(question.duration_seconds)),
        ("reason".to_string(), string(question.reason)),
        ("workflow".to_string(), string(question.workflow)),
    ])
    .map_err(|e| e.to_string())?;
    let now_record = RestrictedExpression::new_record([
        ("epoch".to_string(), RestrictedExpression::new_long(now.epoch)),
        ("hour".to_string(), RestrictedExpression::new_long(now.hour)),
        ("minute".to_string(), RestrictedExpression::new_long(now.minute)),
        ("weekday".to_string(), RestrictedExpression::new_long(now.weekday)),
    ])
    .map_err(|e| e.to_string())?;
    let context = context(vec![
        ("request", request),
        ("automatic", RestrictedExpression::new_bool(question.automatic)),
        ("selfApproval", RestrictedExpression::new_bool(question.principal.user == question.requester)),
        ("now", now_record),
        // The two attributes every other action's context has, so that an unscoped
        // policy reading them (`forbid (principal, action, resource) unless
        // { context.sourceIp.isInRange(...) }`) still validates, and covers approvals.
        ("sourceIp", ip(question.source_ip)),
        ("time", RestrictedExpression::new_long(now.epoch)),
    ])?;
    Ok(Question { action, resource: Resource::Cluster, context })
}

/// The request and entities of a `discover` question.
pub(super) fn discovery(question: &super::DiscoveryQuestion<'_>) -> Result<Question, String> {
    let action = action(super::discovery::ACTION)?;
    let context = context(vec![
        ("view", string(question.view)),
        ("sourceIp", ip(question.source_ip)),
        ("time", RestrictedExpression::new_long(question.now)),
    ])?;
    Ok(Question { action, resource: Resource::Cluster, context })
}
