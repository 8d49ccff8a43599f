//! The console's discovery pages (docs/discovery.md) under `/kubegate/console/discovery`:
//! the cluster's subjects (searchable, by kind), what is bound to a subject (by
//! namespace), a role's rules and who it is bound to, and privilege-level suggestions
//! with the configured levels nothing backs. Read-only: links and GET search forms,
//! no state-changing form, so no CSRF token. Each page is authorised like the API (the
//! Cedar action `discover`, as the session's user) and shows the data's freshness.

use super::pages::{escape, page};
use super::{caller, html, invalid_session, place, refusal, single_values, Caller};
use crate::access::api::{client_address, AccessApi};
use crate::discovery::api::{self as discovery_api, parse_role, FreshnessView};
use crate::discovery::inventory::{Inventory, ObjectRef, Rule, Subject, SubjectKind};
use crate::discovery::ClusterDiscovery;
use crate::http_api::ApiError;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Where the pages live.
pub const DISCOVERY_PATH: &str = "/kubegate/console/discovery";

/// Which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Subjects,
    Roles,
    Rules,
    Levels,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Subjects => "subjects",
            View::Roles => "roles",
            View::Rules => "rules",
            View::Levels => "levels",
        }
    }
}

pub async fn subjects(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    show(&api, &headers, &uri, q.as_deref(), View::Subjects).await
}

pub async fn roles(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    show(&api, &headers, &uri, q.as_deref(), View::Roles).await
}

pub async fn rules(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    show(&api, &headers, &uri, q.as_deref(), View::Rules).await
}

pub async fn levels(State(api): State<AccessApi>, headers: HeaderMap, uri: Uri, RawQuery(q): RawQuery) -> Response {
    show(&api, &headers, &uri, q.as_deref(), View::Levels).await
}

async fn show(api: &AccessApi, headers: &HeaderMap, uri: &Uri, query: Option<&str>, view: View) -> Response {
    let (console, _) = match place(api, headers, uri, None) {
        Ok(placed) => placed,
        Err(response) => return response,
    };
    let session = match caller(&console, headers) {
        Caller::None => return html(StatusCode::OK, super::pages::logged_out(None)),
        Caller::Invalid(why) => return invalid_session(why),
        Caller::Session(session) => session,
    };
    let Some(discovery) = &api.discovery else {
        return refusal(404, "resource discovery is not turned on at this gateway (discovery)");
    };
    let params: HashMap<String, String> = single_values(query).into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let identity = session.identity();
    let cluster = match discovery_api::authorise_identity(
        discovery,
        &api.rules,
        &identity,
        param("cluster"),
        view.name(),
        &client_address(headers),
    ) {
        Ok(cluster) => cluster,
        Err(e) => return refusal(e.code(), e.message()),
    };
    let freshness = match discovery_api::served(cluster) {
        Ok(freshness) => freshness,
        Err(e) => return refusal(e.code(), e.message()),
    };
    let body = {
        let state = cluster.read();
        let inventory = state.inventory();
        match view {
            View::Subjects => Ok(subjects_body(inventory, cluster.name(), param("kind"), param("search"))),
            View::Roles => roles_body(inventory, cluster.name(), param("subject"), param("namespace")),
            View::Rules => rules_body(inventory, cluster.name(), param("role")),
            View::Levels => Ok(levels_body(inventory, cluster)),
        }
    };
    match body {
        Ok(body) => html(StatusCode::OK, frame(&session.user, cluster.name(), &freshness, view, &body)),
        Err(e) => refusal(e.code(), e.message()),
    }
}

/// A link to a discovery page with these query parameters, escaped for an attribute.
fn link(page: &str, params: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    escape(&format!("{DISCOVERY_PATH}{page}?{query}"))
}

fn frame(user: &str, cluster: &str, freshness: &FreshnessView, view: View, body: &str) -> String {
    let stale = if freshness.state == "stale" {
        format!(
            "<p class=\"refusal\" id=\"stale\">Stale: kubegate has not reached cluster {} since {} ({} s); this is the last data it had.</p>\n",
            escape(cluster),
            escape(&freshness.synced_at),
            freshness.stale_seconds
        )
    } else {
        String::new()
    };
    let nav = format!(
        "<p><a href=\"{}\">Subjects</a> · <a href=\"{}\">Privilege levels</a> · <a href=\"{}\">Access requests</a></p>",
        link("", &[("cluster", cluster)]),
        link("/levels", &[("cluster", cluster)]),
        super::config::PATH
    );
    let title = format!("Cluster {cluster}: {}", view.name());
    page(
        &title,
        &format!(
            "<header><h1>{}</h1><div>Logged in as <strong id=\"user\">{}</strong></div></header>\n{nav}\n{stale}{body}",
            escape(&title),
            escape(user)
        ),
        "",
    )
}

fn subject_kind(kind: Option<&str>) -> Option<SubjectKind> {
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("group") => Some(SubjectKind::Group),
        Some("user") => Some(SubjectKind::User),
        Some("serviceaccount") => Some(SubjectKind::ServiceAccount),
        _ => None,
    }
}

/// `group:engineering`, the form the roles page takes.
fn subject_param(subject: &Subject) -> String {
    match subject.kind {
        SubjectKind::Group => format!("group:{}", subject.name),
        SubjectKind::User => format!("user:{}", subject.name),
        SubjectKind::ServiceAccount => format!("serviceaccount:{}:{}", subject.namespace, subject.name),
    }
}

fn role_param(role: &ObjectRef) -> String {
    if role.namespace.is_empty() {
        format!("clusterrole/{}", role.name)
    } else {
        format!("role/{}/{}", role.namespace, role.name)
    }
}

fn subjects_body(inventory: &Inventory, cluster: &str, kind: Option<&str>, search: Option<&str>) -> String {
    let kind = subject_kind(kind);
    let option = |value: &str, label: &str, selected: bool| {
        format!("<option value=\"{value}\"{}>{label}</option>", if selected { " selected" } else { "" })
    };
    let mut body = format!(
        "<form method=\"get\" action=\"{DISCOVERY_PATH}\" id=\"search\"><input type=\"hidden\" name=\"cluster\" value=\"{}\">\
<input type=\"text\" name=\"search\" value=\"{}\" placeholder=\"name contains\"> <select name=\"kind\">{}{}{}{}</select> \
<button type=\"submit\">Search</button></form>\n",
        escape(cluster),
        escape(search.unwrap_or_default()),
        option("", "any kind", kind.is_none()),
        option("group", "groups", kind == Some(SubjectKind::Group)),
        option("user", "users", kind == Some(SubjectKind::User)),
        option("serviceaccount", "service accounts", kind == Some(SubjectKind::ServiceAccount)),
    );
    let found = inventory.subjects(kind, search);
    if found.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-subjects\">No subject matches.</p>\n");
        return body;
    }
    body.push_str("<table id=\"subjects\"><tr><th>Kind</th><th>Namespace</th><th>Name</th><th>Bindings</th></tr>\n");
    for s in found {
        let subject = &s.subject;
        let _ = writeln!(
            body,
            "<tr><td>{:?}</td><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td></tr>",
            subject.kind,
            escape(&subject.namespace),
            link("/roles", &[("cluster", cluster), ("subject", &subject_param(subject))]),
            escape(&subject.name),
            s.bindings
        );
    }
    body.push_str("</table>\n");
    body
}

fn roles_body(
    inventory: &Inventory,
    cluster: &str,
    subject: Option<&str>,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    let text = subject.unwrap_or_default();
    let subject = Subject::parse(text).ok_or_else(|| {
        ApiError::new(422, format!("subject {text:?}: group:NAME, user:NAME or serviceaccount:NAMESPACE:NAME"))
    })?;
    let grants = inventory.grants_of(&subject, namespace);
    let mut body = format!(
        "<h2 id=\"subject\">{:?} {}</h2>\n<form method=\"get\" action=\"{DISCOVERY_PATH}/roles\"><input type=\"hidden\" name=\"cluster\" value=\"{}\">\
<input type=\"hidden\" name=\"subject\" value=\"{}\"><input type=\"text\" name=\"namespace\" value=\"{}\" placeholder=\"namespace\"> \
<button type=\"submit\">Only what applies there</button></form>\n",
        subject.kind,
        escape(&subject_param(&subject)),
        escape(cluster),
        escape(text),
        escape(namespace.unwrap_or_default())
    );
    if grants.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-roles\">Nothing is bound to this subject.</p>\n");
        return Ok(body);
    }
    body.push_str("<table id=\"roles\"><tr><th>Role</th><th>Where</th><th>Binding</th><th>Rules</th></tr>\n");
    for grant in grants {
        let role = if grant.exists {
            format!(
                "<a href=\"{}\">{}</a>",
                link("/rules", &[("cluster", cluster), ("role", &role_param(&grant.role))]),
                escape(&grant.role.describe())
            )
        } else {
            format!("{} <span class=\"refusal\">(does not exist)</span>", escape(&grant.role.describe()))
        };
        let scope = if grant.scope.is_empty() { "cluster-wide".to_owned() } else { escape(&grant.scope) };
        let _ = writeln!(
            body,
            "<tr><td>{role}</td><td>{scope}</td><td>{}</td><td>{}</td></tr>",
            escape(&grant.binding.describe()),
            grant.rules
        );
    }
    body.push_str("</table>\n");
    Ok(body)
}

fn rules_table(id: &str, rules: &[Rule]) -> String {
    let list = |items: &[String]| {
        items.iter().map(|i| if i.is_empty() { "\"\"".to_owned() } else { escape(i) }).collect::<Vec<_>>().join(", ")
    };
    let mut out = format!(
        "<table id=\"{id}\"><tr><th>Verbs</th><th>API groups</th><th>Resources</th><th>Names</th><th>Non-resource URLs</th></tr>\n"
    );
    for rule in rules {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            list(&rule.verbs),
            list(&rule.api_groups),
            list(&rule.resources),
            list(&rule.resource_names),
            list(&rule.non_resource_urls)
        );
    }
    out.push_str("</table>\n");
    out
}

fn rules_body(inventory: &Inventory, cluster: &str, role: Option<&str>) -> Result<String, ApiError> {
    let text = role.unwrap_or_default();
    let at = parse_role(text)
        .ok_or_else(|| ApiError::new(422, format!("role {text:?}: clusterrole/NAME or role/NAMESPACE/NAME")))?;
    let info = inventory
        .roles
        .get(&at)
        .ok_or_else(|| ApiError::new(404, format!("{} does not exist in this cluster", at.describe())))?;
    let labels: Vec<String> = info.labels.iter().map(|(k, v)| escape(&format!("{k}={v}"))).collect();
    let mut body = format!(
        "<h2 id=\"role\">{}</h2>\n<p>Labels: {}{}</p>\n",
        escape(&at.describe()),
        if labels.is_empty() { "none".to_owned() } else { labels.join(", ") },
        if info.aggregated {
            " · aggregated (its rules come from the ClusterRoles its aggregationRule selects)"
        } else {
            ""
        }
    );
    body.push_str(&rules_table("rules", &info.rules));
    body.push_str("<h3>Bound to</h3>\n<ul id=\"bound-to\">\n");
    for (binding, bound) in inventory.bound_to(&at) {
        for subject in &bound.subjects {
            let _ = writeln!(
                body,
                "<li><a href=\"{}\">{:?} {}</a> by {}</li>",
                link("/roles", &[("cluster", cluster), ("subject", &subject_param(subject))]),
                subject.kind,
                escape(&subject_param(subject)),
                escape(&binding.describe())
            );
        }
    }
    body.push_str("</ul>\n");
    Ok(body)
}

fn levels_body(inventory: &Inventory, cluster: &Arc<ClusterDiscovery>) -> String {
    let report = discovery_api::level_report(inventory, &cluster.configured_levels());
    let mut body = String::from("<h2>Levels kubegate grants that nothing backs</h2>\n");
    if report.unbacked.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-unbacked\">Every configured level is bound in this cluster.</p>\n");
    } else {
        body.push_str(
            "<table id=\"unbacked\"><tr><th>Level</th><th>Why it grants nothing</th><th>Named by</th></tr>\n",
        );
        for level in &report.unbacked {
            let _ = writeln!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&level.level),
                escape(level.reason),
                escape(&level.named_by.join(", "))
            );
        }
        body.push_str("</table>\n");
    }
    body.push_str("<h2>Groups bound in this cluster (privilege-level suggestions)</h2>\n");
    body.push_str("<table id=\"candidates\"><tr><th>Group</th><th>A kubegate level</th><th>Bound to</th></tr>\n");
    for candidate in &report.candidates {
        let grants: Vec<String> = candidate
            .grants
            .iter()
            .map(|g| {
                let scope = if g.scope.is_empty() { "cluster-wide".to_owned() } else { format!("in {}", g.scope) };
                format!("{} {} ({} rules)", escape(&g.role.describe()), escape(&scope), g.rules.len())
            })
            .collect();
        let _ = writeln!(
            body,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            link("/roles", &[("cluster", cluster.name()), ("subject", &format!("group:{}", candidate.group))]),
            escape(&candidate.group),
            if candidate.configured { "yes" } else { "no" },
            grants.join("<br>")
        );
    }
    body.push_str("</table>\n");
    body
}
