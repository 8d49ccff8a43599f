//! The Cedar entities and contexts of kubegate's questions: the user's entities, and for
//! each question its action, resource and context (`entity_store` puts them together).

use super::context::{Fact, Record};
use super::entity_store::{Question, Resource};
use crate::request_info::{Query, RequestInfo, StreamRequest};
use cedar_policy::{Entity, EntityTypeName, EntityUid, RestrictedExpression};
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

fn levels_record(levels: &BTreeSet<String>) -> Fact<'_> {
    Fact::Record(vec![("groups", Fact::Set(levels.iter().map(|l| Fact::text(l)).collect()))])
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

fn base_context(meta: &RequestMeta) -> Record<'_> {
    vec![("sourceIp", Fact::Address(&meta.source_ip)), ("time", Fact::Number(meta.time))]
}

/// `fetchPrivileges` on the cluster.
pub(super) fn fetch_privileges(meta: &RequestMeta) -> Result<Question<'_>, String> {
    Ok(Question { action: action("fetchPrivileges")?, resource: Resource::Cluster, context: base_context(meta) })
}

/// `impersonate` the resolved `levels` on the cluster.
pub(super) fn impersonation<'a>(levels: &'a BTreeSet<String>, meta: &'a RequestMeta) -> Result<Question<'a>, String> {
    let mut context = base_context(meta);
    context.push(("k8s", levels_record(levels)));
    Ok(Question { action: action("impersonate")?, resource: Resource::Cluster, context })
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
pub(super) fn request<'a>(
    cluster: &ClusterFacts,
    info: &'a RequestInfo,
    levels: &'a BTreeSet<String>,
    meta: &'a RequestMeta,
) -> Result<Question<'a>, String> {
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
        RequestInfo::Resource(r) => &r.verb,
        RequestInfo::NonResource { verb, .. } => verb,
    };
    // `meta.query` is canonical, so reading it again gives exactly what was decided on;
    // only exec, attach and port-forward need it.
    let stream = if StreamRequest::applies_to(info) {
        Query::parse(&meta.query).ok().and_then(|query| StreamRequest::from_request(info, &query)).unwrap_or_default()
    } else {
        StreamRequest::default()
    };
    let request = Fact::Record(vec![
        ("verb", Fact::text(verb)),
        ("path", Fact::text(&meta.path)),
        ("query", Fact::text(&meta.query)),
        ("command", Fact::Text(stream.command.into())),
        ("container", Fact::Text(stream.container.into())),
    ]);
    let mut context = base_context(meta);
    context.push(("k8s", levels_record(levels)));
    context.push(("request", request));
    Ok(Question { action, resource: Resource::Entity(Box::new(resource)), context })
}

/// The `approve` question: the approver (or, for an automatic approval, the requester)
/// with their groups and roles, the cluster the levels are requested on, and the
/// request and the time in the context.
pub(super) fn approval<'a>(
    question: &'a super::ApprovalQuestion<'_>,
    now: super::approval::UtcTime,
) -> Result<Question<'a>, String> {
    let action = action(super::approval::ACTION)?;
    let request = Fact::Record(vec![
        ("requester", Fact::text(question.requester)),
        ("levels", Fact::Set(question.levels.iter().map(|l| Fact::text(l)).collect())),
        ("durationSeconds", Fact::Number(question.duration_seconds)),
        ("reason", Fact::text(question.reason)),
        ("workflow", Fact::text(question.workflow)),
    ]);
    let now_record = Fact::Record(vec![
        ("epoch", Fact::Number(now.epoch)),
        ("hour", Fact::Number(now.hour)),
        ("minute", Fact::Number(now.minute)),
        ("weekday", Fact::Number(now.weekday)),
    ]);
    let context = vec![
        ("request", request),
        ("automatic", Fact::Flag(question.automatic)),
        ("selfApproval", Fact::Flag(question.principal.user == question.requester)),
        ("now", now_record),
        // The two attributes every other action's context has, so that an unscoped
        // policy reading them (`forbid (principal, action, resource) unless
        // { context.sourceIp.isInRange(...) }`) still validates, and covers approvals.
        ("sourceIp", Fact::Address(question.source_ip)),
        ("time", Fact::Number(now.epoch)),
    ];
    Ok(Question { action, resource: Resource::Cluster, context })
}

/// The request and entities of a `discover` question.
pub(super) fn discovery<'a>(question: &'a super::DiscoveryQuestion<'_>) -> Result<Question<'a>, String> {
    let action = action(super::discovery::ACTION)?;
    let context = vec![
        ("view", Fact::text(question.view)),
        ("sourceIp", Fact::Address(question.source_ip)),
        ("time", Fact::Number(question.now)),
    ];
    Ok(Question { action, resource: Resource::Cluster, context })
}
