//! The Cedar entities and requests for one question about one user.

use crate::request_info::{Query, RequestInfo, StreamRequest};
use cedar_policy::{Context, Entities, Entity, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

/// Who is asking: the user, their IdP groups and the standing roles they hold.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub user: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

/// The cluster a question is about: its name, and the tags it and every resource in it
/// carry (`resource.getTag("env")`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

fn ip(value: &str) -> RestrictedExpression {
    // An unparsable address becomes the unspecified one rather than an evaluation error.
    let value = if value.parse::<std::net::IpAddr>().is_ok() { value } else { "0.0.0.0" };
    RestrictedExpression::new_ip(value)
}

fn levels_record(levels: &BTreeSet<String>) -> RestrictedExpression {
    let set = RestrictedExpression::new_set(levels.iter().map(|l| string(l)));
    RestrictedExpression::new_record([("groups".to_string(), set)])
        .unwrap_or_else(|_| RestrictedExpression::new_bool(false))
}

/// The user (in their groups and roles), those groups and roles, and the cluster.
fn principal_entities(
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

/// The context record; `Request::new` validates it against the schema for the action.
fn context(pairs: Vec<(&str, RestrictedExpression)>) -> Result<Context, String> {
    Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v))).map_err(|e| e.to_string())
}

fn base_context(meta: &RequestMeta) -> Vec<(&'static str, RestrictedExpression)> {
    vec![("sourceIp", ip(&meta.source_ip)), ("time", RestrictedExpression::new_long(meta.time))]
}

fn finish(
    schema: &Schema,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Context,
    entities: Vec<Entity>,
) -> Result<(Request, Entities), String> {
    let request = Request::new(principal, action, resource, context, Some(schema)).map_err(|e| e.to_string())?;
    let entities = Entities::from_entities(entities, Some(schema)).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

pub(super) fn fetch_privileges(
    schema: &Schema,
    cluster: &ClusterFacts,
    principal: &Principal,
    meta: &RequestMeta,
) -> Result<(Request, Entities), String> {
    let (user, cluster, entities) = principal_entities(principal, cluster)?;
    let action = action("fetchPrivileges")?;
    let context = context(base_context(meta))?;
    finish(schema, user, action, cluster, context, entities)
}

pub(super) fn impersonation(
    schema: &Schema,
    cluster: &ClusterFacts,
    principal: &Principal,
    levels: &BTreeSet<String>,
    meta: &RequestMeta,
) -> Result<(Request, Entities), String> {
    let (user, cluster, entities) = principal_entities(principal, cluster)?;
    let action = action("impersonate")?;
    let mut pairs = base_context(meta);
    pairs.push(("k8s", levels_record(levels)));
    let context = context(pairs)?;
    finish(schema, user, action, cluster, context, entities)
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

pub(super) fn request(
    schema: &Schema,
    cluster: &ClusterFacts,
    principal: &Principal,
    info: &RequestInfo,
    levels: &BTreeSet<String>,
    meta: &RequestMeta,
) -> Result<(Request, Entities), String> {
    let (user, cluster_uid, mut entities) = principal_entities(principal, cluster)?;
    let parents = [cluster_uid];
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
            entities.push(entity(&resource, attrs)?);
            resource
        }
        RequestInfo::NonResource { path, .. } => {
            let resource = uid("NonResourceURL", path)?;
            let attrs = HashMap::from([("path".to_string(), string(path))]);
            entities.push(entity(&resource, attrs)?);
            resource
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
    let context = context(pairs)?;
    finish(schema, user, action, resource, context, entities)
}

/// The `approve` question: the approver (or, for an automatic approval, the requester)
/// with their groups and roles, the cluster the levels are requested on, and the
/// request and the time in the context.
pub(super) fn approval(
    schema: &Schema,
    question: &super::ApprovalQuestion<'_>,
    now: super::approval::UtcTime,
) -> Result<(Request, Entities), String> {
    let (user, cluster, entities) = principal_entities(question.principal, question.cluster)?;
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
    finish(schema, user, action, cluster, context, entities)
}

/// The request and entities of a `discover` question.
pub(super) fn discovery(
    schema: &Schema,
    question: &super::DiscoveryQuestion<'_>,
) -> Result<(Request, Entities), String> {
    let (user, cluster, entities) = principal_entities(question.principal, question.cluster)?;
    let action = action(super::discovery::ACTION)?;
    let context = context(vec![
        ("view", string(question.view)),
        ("sourceIp", ip(question.source_ip)),
        ("time", RestrictedExpression::new_long(question.now)),
    ])?;
    finish(schema, user, action, cluster, context, entities)
}
