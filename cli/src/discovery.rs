//! `kubegate discovery`: what a cluster's RBAC grants, read from the gateway's copy of it
//! (`/kubegate/v1/discovery/...`): the subjects bindings name, the roles a subject holds,
//! what a role allows, which groups could serve as privilege levels (and which levels
//! kubegate is configured with that no binding backs), and how fresh each copy is.
//!
//! The gateway answers from its own watch of the cluster, so a person can look without
//! any RBAC read rights of their own on the cluster; Cedar's `discover` action decides.
//! Like `kubegate access`, every call goes through kubectl on the chosen context
//! ([`crate::gateway_api`]) and so carries the user's own credential; the API sits at the
//! gateway's root, and a context's `/clusters/<name>` suffix only supplies the default
//! `--cluster`.

use crate::access::{CommonArgs, Document, Output};
use crate::access_print::{clean, document};
use crate::discovery_print as print;
use crate::gateway_api::{Gateway, KubeContext};
use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Where the discovery API lives, under the gateway's root.
pub const DISCOVERY_PATH: &str = "/kubegate/v1/discovery";

#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: DiscoveryCommand,
}

/// `--cluster`, for every command that reads one cluster.
#[derive(Debug, Args)]
pub struct ClusterArg {
    /// The cluster (default: the context's, when its server URL ends in
    /// `/clusters/<name>`; else the gateway's only one).
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DiscoveryCommand {
    /// The subjects bindings name, and every ServiceAccount, with how many bindings name
    /// each.
    Subjects {
        /// Only subjects of this kind.
        #[arg(long, value_enum)]
        kind: Option<SubjectKind>,
        /// Only subjects whose name contains this text (in any case).
        #[arg(long)]
        search: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// The roles a subject holds, through which bindings, and where.
    Roles {
        /// `group:NAME`, `user:NAME` or `serviceaccount:NAMESPACE:NAME`.
        #[arg(value_parser = SubjectName::parse)]
        subject: SubjectName,
        /// Only what applies in this namespace (its RoleBindings, and ClusterRoleBindings).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// What a role allows, and whom its bindings grant it to.
    Rules {
        /// `clusterrole/NAME` or `role/NAMESPACE/NAME`.
        #[arg(value_parser = RoleName::parse)]
        role: RoleName,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Groups that could serve as privilege levels, what each grants, and the levels
    /// kubegate is configured with that no binding backs.
    Levels {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// How fresh the gateway's copy of each cluster you may look at is.
    Status,
}

/// A kind of subject, as `--kind` and the `kind` query parameter write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubjectKind {
    Group,
    User,
    #[value(name = "serviceaccount")]
    ServiceAccount,
}

impl SubjectKind {
    pub fn query_value(self) -> &'static str {
        match self {
            SubjectKind::Group => "group",
            SubjectKind::User => "user",
            SubjectKind::ServiceAccount => "serviceaccount",
        }
    }
}

/// The `roles` command's SUBJECT. Checked here so a typo is explained before kubectl
/// runs (and perhaps logs someone in) rather than coming back as a bare 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectName {
    pub kind: SubjectKind,
    /// Empty but for a ServiceAccount.
    pub namespace: String,
    pub name: String,
}

const SUBJECT_FORMS: &str = "write group:NAME, user:NAME or serviceaccount:NAMESPACE:NAME";

impl SubjectName {
    /// Group and user names may hold `:` themselves (`group:system:masters`), so only
    /// the first `:` ends the kind; a ServiceAccount's namespace and name cannot.
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| format!("{text:?} is not a subject: {why} ({SUBJECT_FORMS})");
        let (kind, rest) = text.split_once(':').ok_or_else(|| refuse("no kind"))?;
        let kind = SubjectKind::from_str(kind, true).map_err(|_| refuse(&format!("no subject kind {kind:?}")))?;
        let (namespace, name) = match kind {
            SubjectKind::ServiceAccount => rest.split_once(':').ok_or_else(|| refuse("no namespace"))?,
            SubjectKind::Group | SubjectKind::User => ("", rest),
        };
        if kind == SubjectKind::ServiceAccount && (namespace.is_empty() || name.contains(':')) {
            return Err(refuse("a ServiceAccount needs its namespace and name"));
        }
        if name.is_empty() {
            return Err(refuse("no name"));
        }
        Ok(Self { kind, namespace: namespace.to_owned(), name: name.to_owned() })
    }

    /// The `subject` query parameter: the same form, with the kind in lower case.
    pub fn query_value(&self) -> String {
        match self.kind {
            SubjectKind::ServiceAccount => format!("serviceaccount:{}:{}", self.namespace, self.name),
            kind => format!("{}:{}", kind.query_value(), self.name),
        }
    }
}

/// The `rules` command's ROLE, checked like [`SubjectName`]. Role names may hold `:`
/// (`system:aggregate-to-view`) but never `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleName {
    ClusterRole { name: String },
    Role { namespace: String, name: String },
}

impl RoleName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = || format!("{text:?} is not a role (write clusterrole/NAME or role/NAMESPACE/NAME)");
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|part| part.is_empty()) {
            return Err(refuse());
        }
        match parts.as_slice() {
            [kind, name] if kind.eq_ignore_ascii_case("clusterrole") => {
                Ok(RoleName::ClusterRole { name: (*name).to_owned() })
            }
            [kind, namespace, name] if kind.eq_ignore_ascii_case("role") => {
                Ok(RoleName::Role { namespace: (*namespace).to_owned(), name: (*name).to_owned() })
            }
            _ => Err(refuse()),
        }
    }

    /// The `role` query parameter.
    pub fn query_value(&self) -> String {
        match self {
            RoleName::ClusterRole { name } => format!("clusterrole/{name}"),
            RoleName::Role { namespace, name } => format!("role/{namespace}/{name}"),
        }
    }
}

// The API's JSON (the discovery contract), as far as the tables use it (`-o json|yaml`
// print all of it). Unknown fields are ignored, and missing or `null` ones read as
// empty: a newer gateway may say more, and an older one less.

/// What every answer but `clusters` carries besides its own fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct About {
    pub cluster: String,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Freshness {
    pub state: String,
    pub synced_at: Option<String>,
    /// A number of seconds; read as a float so that a gateway writing `12.5` is still
    /// understood.
    pub stale_seconds: f64,
}

impl Freshness {
    pub fn is_stale(&self) -> bool {
        self.state.eq_ignore_ascii_case("stale")
    }

    /// How old the data is; zero for a nonsense value.
    pub fn age(&self) -> Duration {
        Duration::try_from_secs_f64(self.stale_seconds).unwrap_or_default()
    }
}

/// A role, a binding or a subject: `namespace` is empty when cluster-scoped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// `GET .../subjects`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubjectList {
    pub subjects: Vec<SubjectEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubjectEntry {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub bindings: u64,
}

/// `GET .../roles`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoleList {
    pub subject: ObjectRef,
    pub roles: Vec<RoleGrant>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoleGrant {
    pub role: ObjectRef,
    pub binding: ObjectRef,
    /// A namespace, or empty for cluster-wide.
    pub scope: String,
    pub rules: u64,
    /// Absent reads as true: only an explicit `false` marks a role as missing.
    pub exists: Option<bool>,
}

impl RoleGrant {
    pub fn role_exists(&self) -> bool {
        self.exists.unwrap_or(true)
    }
}

/// `GET .../rules`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleRules {
    pub role: RoleInfo,
    pub rules: Vec<Rule>,
    pub bound_to: Vec<BoundTo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoleInfo {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// Sorted, so the header reads the same every time.
    pub labels: BTreeMap<String, String>,
    pub aggregated: bool,
}

/// A PolicyRule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BoundTo {
    pub subject: ObjectRef,
    pub binding: ObjectRef,
}

/// `GET .../levels`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Levels {
    pub candidates: Vec<Candidate>,
    pub unbacked: Vec<Unbacked>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Candidate {
    pub group: String,
    pub configured: bool,
    pub grants: Vec<LevelGrant>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LevelGrant {
    pub role: ObjectRef,
    pub binding: ObjectRef,
    pub scope: String,
    pub rules: Vec<Rule>,
}

/// A level kubegate's configuration names that no binding on the cluster backs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Unbacked {
    pub level: String,
    pub reason: String,
    pub named_by: Vec<String>,
}

/// `GET .../clusters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterList {
    pub clusters: Vec<ClusterStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
    pub state: String,
    pub synced_at: Option<String>,
    pub stale_seconds: f64,
    /// `None` when the gateway has no data for the cluster.
    pub objects: Option<ObjectCounts>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectCounts {
    pub namespaces: u64,
    pub service_accounts: u64,
    pub roles: u64,
    pub cluster_roles: u64,
    pub role_bindings: u64,
    pub cluster_role_bindings: u64,
}

/// A parsed answer, its common fields, and the document it came from (for `-o
/// json|yaml`, which print the gateway's answer as it is).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub about: About,
    pub doc: Document,
}

impl<T: DeserializeOwned> Reply<T> {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let unlike = |e: serde_json::Error| {
            anyhow::anyhow!(
                "the server did not answer like a kubegate gateway with the discovery API ({e}); is this context's \
                 server kubegate, and a version that has it?"
            )
        };
        let doc = serde_json::from_str(text).map_err(unlike)?;
        let mut json: serde_json::Value = serde_json::from_str(text).map_err(unlike)?;
        drop_nulls(&mut json);
        let about = serde_json::from_value(json.clone()).map_err(unlike)?;
        let value = serde_json::from_value(json).map_err(unlike)?;
        Ok(Self { value, about, doc })
    }
}

/// Removes `null` members of objects, at every depth, so that with `#[serde(default)]`
/// a `null` reads like a missing field.
fn drop_nulls(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(members) => {
            members.retain(|_, value| !value.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// `{gateway_path}/kubegate/v1/discovery/{endpoint}?...`: the parameters given, form
/// encoded (a search or a subject may hold `&`, `:`, `@` or spaces), the others left out.
pub fn endpoint_path(gateway_path: &str, endpoint: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    let path = format!("{gateway_path}{DISCOVERY_PATH}/{endpoint}");
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// Runs one `discovery` command.
pub fn run(args: &DiscoveryArgs) -> anyhow::Result<()> {
    let context =
        KubeContext { kubeconfig: args.common.kubeconfig.as_deref(), context: args.common.context.as_deref() };
    let api = DiscoveryApi { gateway: Gateway::open(context)? };
    let output = args.common.output;
    match &args.command {
        DiscoveryCommand::Subjects { kind, search, cluster } => {
            let kind = kind.map(SubjectKind::query_value);
            let params = [("cluster", api.cluster(cluster)), ("kind", kind), ("search", search.as_deref())];
            let reply: Reply<SubjectList> = api.get("subjects", &params, "which subjects bindings name")?;
            show(&reply, output, |list| print::subjects_table(&list.subjects), "no subject matches")
        }
        DiscoveryCommand::Roles { subject, namespace, cluster } => {
            let subject = subject.query_value();
            let params = [
                ("cluster", api.cluster(cluster)),
                ("subject", Some(&subject[..])),
                ("namespace", namespace.as_deref()),
            ];
            let reply: Reply<RoleList> = api.get("roles", &params, &format!("which roles {subject} holds"))?;
            show(&reply, output, |list| print::roles_table(&list.roles), &format!("no binding grants {subject} a role"))
        }
        DiscoveryCommand::Rules { role, cluster } => {
            let role = role.query_value();
            let params = [("cluster", api.cluster(cluster)), ("role", Some(&role[..]))];
            let reply: Reply<RoleRules> = api.get("rules", &params, &format!("what {role} allows"))?;
            show(&reply, output, |rules| Some(print::rules_text(rules)), "")
        }
        DiscoveryCommand::Levels { cluster } => {
            let params = [("cluster", api.cluster(cluster))];
            let reply: Reply<Levels> = api.get("levels", &params, "which groups could be privilege levels")?;
            show(&reply, output, |levels| Some(print::levels_text(levels)), "")
        }
        DiscoveryCommand::Status => {
            let reply: Reply<ClusterList> = api.get("clusters", &[], "how fresh its cluster data is")?;
            let now = SystemTime::now();
            show(&reply, output, |list| print::status_table(&list.clusters, now), "there is no cluster you may look at")
        }
    }
}

/// The discovery API on one context's gateway.
struct DiscoveryApi<'a> {
    gateway: Gateway<'a>,
}

impl DiscoveryApi<'_> {
    /// `--cluster`, else the context's; `None` lets the gateway pick its only one.
    fn cluster<'a>(&'a self, chosen: &'a ClusterArg) -> Option<&'a str> {
        chosen.cluster.as_deref().or(self.gateway.server().cluster())
    }

    /// `what` ends "kubectl could not ask the gateway ..." on failure.
    fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        params: &[(&str, Option<&str>)],
        what: &str,
    ) -> anyhow::Result<Reply<T>> {
        let path = endpoint_path(self.gateway.server().gateway_path(), endpoint, params);
        Reply::parse(&self.gateway.get_raw(&path, &[], what)?)
    }
}

/// Warns on stderr when the data is stale, then prints the document (`-o json|yaml`) or
/// what `render` makes of the answer; `render` giving `None` (nothing to list) says
/// `nothing` on stderr instead, so stdout stays empty.
fn show<T>(
    reply: &Reply<T>,
    output: Output,
    render: impl FnOnce(&T) -> Option<String>,
    nothing: &str,
) -> anyhow::Result<()> {
    if let Some(warning) = print::stale_warning(&reply.about) {
        eprintln!("{warning}");
    }
    if let Some(text) = document(&reply.doc, output)? {
        print!("{text}");
        return Ok(());
    }
    match render(&reply.value) {
        Some(text) => print!("{text}"),
        None => eprintln!("kubegate: {}{}", clean(nothing), print::on_cluster(&reply.about)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<DiscoveryArgs, clap::Error> {
        let cli = crate::Cli::try_parse_from(std::iter::once("kubegate").chain(args.iter().copied()))?;
        match cli.command {
            crate::Command::Discovery(discovery) => Ok(discovery),
            other => panic!("not a discovery command: {other:?}"),
        }
    }

    fn parsed(args: &[&str]) -> DiscoveryArgs {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn subject(text: &str) -> SubjectName {
        SubjectName::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn subjects_read_the_three_forms_and_names_may_hold_colons() {
        let group = subject("group:system:masters");
        assert_eq!((group.kind, group.name.as_str()), (SubjectKind::Group, "system:masters"));
        assert_eq!(group.query_value(), "group:system:masters");
        let user = subject("User:alice@example.com");
        assert_eq!((user.kind, user.query_value()), (SubjectKind::User, "user:alice@example.com".to_owned()));
        let sa = subject("serviceaccount:team-a:builder");
        assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("team-a", "builder"));
        assert_eq!(sa.query_value(), "serviceaccount:team-a:builder");
    }

    #[test]
    fn malformed_subjects_are_refused_with_the_forms() {
        for bad in
            ["engineering", "group:", "team:x", "serviceaccount:builder", "serviceaccount::b", "serviceaccount:a:"]
        {
            let error = SubjectName::parse(bad).map(drop).err().unwrap_or_else(|| panic!("{bad} passed"));
            assert!(error.contains("serviceaccount:NAMESPACE:NAME"), "{bad}: {error}");
        }
        assert!(SubjectName::parse("serviceaccount:a:b:c").is_err());
        let refused = parse(&["discovery", "roles", "alice"]).map(drop);
        assert!(refused.is_err_and(|e| e.to_string().contains("group:NAME")));
    }

    #[test]
    fn roles_read_both_forms_and_refuse_others() {
        let view = RoleName::parse("clusterrole/system:aggregate-to-view").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.query_value(), "clusterrole/system:aggregate-to-view");
        let dev = RoleName::parse("Role/team-a/dev").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev, RoleName::Role { namespace: "team-a".into(), name: "dev".into() });
        assert_eq!(dev.query_value(), "role/team-a/dev");
        for bad in ["view", "clusterrole/", "clusterrole/a/b", "role/dev", "role//dev", "role/a/b/c", "crole/x"] {
            assert!(RoleName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_commands_take_their_options() {
        let args = parsed(&[
            "discovery",
            "subjects",
            "--kind",
            "serviceaccount",
            "--search",
            "ci",
            "--cluster",
            "dev",
            "-o",
            "yaml",
        ]);
        assert_eq!(args.common.output, Output::Yaml);
        let DiscoveryCommand::Subjects { kind, search, cluster } = args.command else { panic!("{:?}", args.command) };
        assert_eq!(
            (kind, search.as_deref(), cluster.cluster.as_deref()),
            (Some(SubjectKind::ServiceAccount), Some("ci"), Some("dev"))
        );
        let args = parsed(&["discovery", "--context", "c", "roles", "group:eng", "-n", "team-a"]);
        assert_eq!(args.common.context.as_deref(), Some("c"));
        assert!(matches!(args.command, DiscoveryCommand::Roles { namespace: Some(n), .. } if n == "team-a"));
        assert!(matches!(parsed(&["discovery", "status"]).command, DiscoveryCommand::Status));
        assert!(matches!(
            parsed(&["discovery", "levels"]).command,
            DiscoveryCommand::Levels { cluster: ClusterArg { cluster: None } }
        ));
        assert!(parse(&["discovery", "subjects", "--kind", "robot"]).is_err());
        assert!(parse(&["discovery", "rules"]).is_err(), "the role is required");
    }

    #[test]
    fn query_values_are_percent_encoded_and_absent_ones_left_out() {
        let path =
            endpoint_path("", "subjects", &[("cluster", Some("dev")), ("kind", None), ("search", Some("a&b c"))]);
        assert_eq!(path, "/kubegate/v1/discovery/subjects?cluster=dev&search=a%26b+c");
        let subject = subject("user:oidc:alice@example.com").query_value();
        let path = endpoint_path("/k8s", "roles", &[("cluster", None), ("subject", Some(&subject[..]))]);
        assert_eq!(path, "/k8s/kubegate/v1/discovery/roles?subject=user%3Aoidc%3Aalice%40example.com");
        let tricky = endpoint_path("", "subjects", &[("search", Some("x=1#y?z+%"))]);
        assert_eq!(tricky, "/kubegate/v1/discovery/subjects?search=x%3D1%23y%3Fz%2B%25");
        assert_eq!(endpoint_path("", "clusters", &[]), "/kubegate/v1/discovery/clusters");
        assert_eq!(endpoint_path("", "levels", &[("cluster", None)]), "/kubegate/v1/discovery/levels");
    }

    #[test]
    fn answers_read_nulls_and_missing_fields_as_empty_and_keep_the_document() {
        let reply: Reply<RoleList> = Reply::parse(
            r#"{"cluster":"dev","freshness":{"state":"stale","syncedAt":null,"staleSeconds":90},"new":1,
                "roles":[{"role":{"kind":"ClusterRole","name":"gone","namespace":null},"binding":{"kind":"ClusterRoleBinding","name":"b"},
                "scope":"","rules":0,"exists":false},{"role":{"kind":"Role","name":"dev","namespace":"team-a"},"scope":"team-a"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(reply.about.cluster, "dev");
        assert!(reply.about.freshness.is_stale());
        assert_eq!(reply.about.freshness.age(), Duration::from_secs(90));
        assert!(!reply.value.roles[0].role_exists());
        assert!(reply.value.roles[1].role_exists(), "absent `exists` is not a missing role");
        assert_eq!(reply.doc.get("new").and_then(Document::as_u64), Some(1));
        assert!(Reply::<RoleList>::parse("<html>").is_err_and(|e| e.to_string().contains("discovery API")));
    }
}
