//! The watches: for each cluster, one kube-runtime watcher per kind (namespaces,
//! service accounts, roles, cluster roles and both kinds of binding), with the
//! gateway's own credential, feeding [`super::ClusterDiscovery`]. A watcher lists, then
//! watches from the list's resource version; a failed watch is recorded (the data turns
//! stale) and the kind is listed again after a backoff, so recovery is a fresh list.

use super::inventory::{BindingInfo, ObjectRef, RoleInfo, Rule, Subject, SubjectKind};
use super::state::{Kind, Object};
use super::ClusterDiscovery;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// The first wait before listing a failed kind again; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a watch must hold after its list to reset the backoff.
const SETTLED: Duration = Duration::from_secs(super::state::SETTLE_SECONDS as u64);

/// Starts the six watches of `cluster` on `client`.
pub fn spawn(client: kube::Client, cluster: Arc<ClusterDiscovery>) {
    spawn_kind(Api::<Namespace>::all(client.clone()), Kind::Namespaces, cluster.clone(), namespace);
    spawn_kind(Api::<ServiceAccount>::all(client.clone()), Kind::ServiceAccounts, cluster.clone(), service_account);
    spawn_kind(Api::<Role>::all(client.clone()), Kind::Roles, cluster.clone(), role);
    spawn_kind(Api::<ClusterRole>::all(client.clone()), Kind::ClusterRoles, cluster.clone(), cluster_role);
    spawn_kind(Api::<RoleBinding>::all(client.clone()), Kind::RoleBindings, cluster.clone(), role_binding);
    spawn_kind(Api::<ClusterRoleBinding>::all(client), Kind::ClusterRoleBindings, cluster, cluster_role_binding);
}

fn spawn_kind<K>(api: Api<K>, kind: Kind, cluster: Arc<ClusterDiscovery>, convert: fn(&K) -> Option<Object>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if follow(&api, kind, &cluster, convert).await {
                backoff = FIRST_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

/// Lists and watches `kind` until the watch fails; true when the watch had settled
/// after its list (delivered an event, or held for [`SETTLED`]), so the next attempt
/// need not wait: a watch that fails right after every list (a credential that may
/// list but not watch) backs off instead of listing the cluster twice a second.
async fn follow<K>(api: &Api<K>, kind: Kind, cluster: &ClusterDiscovery, convert: fn(&K) -> Option<Object>) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut listed_at: Option<std::time::Instant> = None;
    let mut evented = false;
    let settled = |listed_at: Option<std::time::Instant>, evented: bool| {
        evented || listed_at.is_some_and(|at| at.elapsed() >= SETTLED)
    };
    let mut buffer = Vec::new();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(object)) => buffer.extend(convert(&object)),
            Ok(Event::InitDone) => {
                cluster.relisted(kind, std::mem::take(&mut buffer));
                listed_at = Some(std::time::Instant::now());
            }
            Ok(Event::Apply(object)) => {
                evented = true;
                if let Some(object) = convert(&object) {
                    cluster.applied(kind, object);
                }
            }
            Ok(Event::Delete(object)) => {
                evented = true;
                if let Some(object) = convert(&object) {
                    cluster.deleted(kind, &object);
                }
            }
            Err(error) => {
                cluster.failed(kind, crate::error_text::causes(&error));
                return settled(listed_at, evented);
            }
        }
    }
    settled(listed_at, evented)
}

fn namespace(object: &Namespace) -> Option<Object> {
    Some(Object::Namespace(object.name_any()))
}

fn service_account(object: &ServiceAccount) -> Option<Object> {
    Some(Object::ServiceAccount(object.namespace()?, object.name_any()))
}

fn role(object: &Role) -> Option<Object> {
    let at = ObjectRef::role(&object.namespace()?, &object.name_any());
    Some(Object::Role(at, role_info(object, object.rules.as_deref(), false)))
}

fn cluster_role(object: &ClusterRole) -> Option<Object> {
    let at = ObjectRef::cluster_role(&object.name_any());
    let aggregated = object.aggregation_rule.is_some();
    Some(Object::Role(at, role_info(object, object.rules.as_deref(), aggregated)))
}

fn role_info(object: &impl kube::Resource, rules: Option<&[PolicyRule]>, aggregated: bool) -> RoleInfo {
    let meta = object.meta();
    RoleInfo {
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        aggregated,
        rules: rules.unwrap_or_default().iter().map(rule).collect(),
    }
}

fn rule(rule: &PolicyRule) -> Rule {
    let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
    Rule {
        verbs: rule.verbs.clone(),
        api_groups: list(&rule.api_groups),
        resources: list(&rule.resources),
        resource_names: list(&rule.resource_names),
        non_resource_urls: list(&rule.non_resource_urls),
    }
}

fn role_binding(object: &RoleBinding) -> Option<Object> {
    let namespace = object.namespace()?;
    // A RoleBinding's `Role` is in its own namespace; it may bind a ClusterRole too.
    let role = match object.role_ref.kind.as_str() {
        "Role" => ObjectRef::role(&namespace, &object.role_ref.name),
        _ => cluster_role_ref(&object.role_ref)?,
    };
    let subjects = subjects(object.subjects.as_deref(), Some(&namespace));
    let at = super::inventory::ObjectRef {
        kind: super::inventory::RbacKind::RoleBinding,
        name: object.name_any(),
        namespace,
    };
    Some(Object::Binding(at, BindingInfo { subjects, role }))
}

fn cluster_role_binding(object: &ClusterRoleBinding) -> Option<Object> {
    let role = cluster_role_ref(&object.role_ref)?;
    let subjects = subjects(object.subjects.as_deref(), None);
    let at = super::inventory::ObjectRef {
        kind: super::inventory::RbacKind::ClusterRoleBinding,
        name: object.name_any(),
        namespace: String::new(),
    };
    Some(Object::Binding(at, BindingInfo { subjects, role }))
}

/// Only a ClusterRole can be bound cluster-wide; anything else binds nothing (the API
/// server refuses such a binding anyway).
fn cluster_role_ref(role_ref: &RoleRef) -> Option<ObjectRef> {
    (role_ref.kind == "ClusterRole").then(|| ObjectRef::cluster_role(&role_ref.name))
}

fn subjects(subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>, binding_namespace: Option<&str>) -> Vec<Subject> {
    subjects
        .unwrap_or_default()
        .iter()
        .filter_map(|s| {
            let (kind, namespace) = match s.kind.as_str() {
                "Group" => (SubjectKind::Group, String::new()),
                "User" => (SubjectKind::User, String::new()),
                // A service account subject names its namespace; kube-apiserver's
                // authorizer reads a missing one as the binding's.
                "ServiceAccount" => {
                    (SubjectKind::ServiceAccount, s.namespace.clone().or(binding_namespace.map(str::to_owned))?)
                }
                _ => return None,
            };
            Some(Subject { kind, name: s.name.clone(), namespace })
        })
        .collect()
}
