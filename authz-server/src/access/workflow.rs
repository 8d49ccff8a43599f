//! Workflows: which privilege levels may be requested on which clusters, by whom, for
//! how long, and who approves. Part of the reloadable configuration, like roles.

use crate::config::{is_reserved_name, name_problem};
use crate::policy::Principal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The shortest grant: one that could end before its first use helps nobody.
pub const MIN_DURATION: Duration = Duration::from_secs(10);
/// The longest `maxDuration`: a year (standing access is a role, not a request).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Where access requests are stored and how their approvals are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessRequestsConfig {
    /// The cluster (a `clusters[]` name, with an `upstream`) whose API server stores the
    /// `AccessRequest` objects: the one kubegate runs in.
    pub cluster: String,
    /// Their namespace. Default `kubegate`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The HMAC key (at least 32 bytes) every replica signs approvals and grants with:
    /// only what carries its signature counts, whoever else can write the objects.
    pub signing_key_file: PathBuf,
    /// The web console for approvers and requesters under `/kubegate/console/`: the
    /// OAuth client and issuer it logs people in with, and where it is reached (which
    /// makes its redirect URI). Off when unset.
    #[serde(default)]
    pub console: Option<super::console::ConsoleConfig>,
}

fn default_namespace() -> String {
    "kubegate".into()
}

/// Who a workflow lets request or approve: named users, IdP groups, standing roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Audience {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.roles.is_empty()
    }

    /// Whether `principal` is one of them.
    pub fn includes(&self, principal: &Principal) -> bool {
        self.users.contains(&principal.user)
            || principal.groups.iter().any(|g| self.groups.contains(g))
            || principal.roles.iter().any(|r| self.roles.contains(r))
    }
}

/// One workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowConfig {
    /// Its name, unique: requests and audit events name it.
    pub name: String,
    /// The clusters it applies to; empty means every cluster.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// The privilege levels that may be requested. Empty: a request through this
    /// workflow carries no levels (only its grant id, which policies can test).
    #[serde(default)]
    pub levels: Vec<String>,
    /// Who may request; empty means anyone the gateway authenticates.
    #[serde(default)]
    pub requesters: Audience,
    /// Who may approve. Empty: only a Cedar `approve` policy can (automatically).
    #[serde(default)]
    pub approvers: Audience,
    /// How many different approvers must approve. Default 1.
    #[serde(default = "one")]
    pub approvals_required: u32,
    /// How long a grant lasts when the request does not say. Default `1h`.
    #[serde(default = "default_duration")]
    pub default_duration: String,
    /// The longest grant that may be requested. Default `8h`.
    #[serde(default = "max_duration")]
    pub max_duration: String,
    /// Whether a request must give a reason. Default false.
    #[serde(default)]
    pub reason_required: bool,
    /// Where events about this workflow's requests are posted. Off when unset.
    #[serde(default)]
    pub webhook: Option<super::notify::WebhookConfig>,
}

fn one() -> u32 {
    1
}
fn default_duration() -> String {
    "1h".into()
}
fn max_duration() -> String {
    "8h".into()
}

/// A workflow, checked and with its durations read.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub config: WorkflowConfig,
    pub default_duration: Duration,
    pub max_duration: Duration,
}

impl Workflow {
    /// Checks `config` (`at` names it in messages) against the clusters that exist.
    pub fn new(config: WorkflowConfig, at: &str, clusters: &[&str]) -> Result<Self, String> {
        if config.name.trim().is_empty() || name_problem(&config.name).is_some() {
            return Err(format!("{at}.name: a workflow needs a name without surrounding white space"));
        }
        for cluster in &config.clusters {
            if !clusters.contains(&cluster.as_str()) {
                return Err(format!("{at}.clusters: {cluster:?} is not one of the clusters ({})", clusters.join(", ")));
            }
        }
        for level in &config.levels {
            if is_reserved_name(level) {
                return Err(format!("{at}.levels: {level:?}: `system:` groups cannot be privilege levels"));
            }
            if let Some(problem) = name_problem(level) {
                return Err(format!("{at}.levels: {level:?} {problem}"));
            }
        }
        if let Some(hook) = &config.webhook {
            let url = url::Url::parse(&hook.url).map_err(|e| format!("{at}.webhook.url: {:?}: {e}", hook.url))?;
            if !matches!(url.scheme(), "https" | "http") {
                return Err(format!("{at}.webhook.url: must be https (or http), got {}", hook.url));
            }
        }
        if config.approvals_required == 0 {
            return Err(format!("{at}.approvalsRequired: at least 1 (automatic approval is a Cedar `approve` policy)"));
        }
        let duration = |field: &str, text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| (MIN_DURATION..=MAX_DURATION).contains(d))
                .ok_or_else(|| format!("{at}.{field}: {text:?} is not a duration from 10s to a year (`30m`, `2h`)"))
        };
        let default_duration = duration("defaultDuration", &config.default_duration)?;
        let max_duration = duration("maxDuration", &config.max_duration)?;
        if default_duration > max_duration {
            return Err(format!("{at}.defaultDuration: longer than maxDuration"));
        }
        Ok(Self { config, default_duration, max_duration })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn applies_to(&self, cluster: &str) -> bool {
        self.config.clusters.is_empty() || self.config.clusters.iter().any(|c| c == cluster)
    }

    /// Whether `principal` may request through this workflow.
    pub fn may_request(&self, principal: &Principal) -> bool {
        self.config.requesters.is_empty() || self.config.requesters.includes(principal)
    }

    /// Whether `principal` is one of this workflow's approvers.
    pub fn may_approve(&self, principal: &Principal) -> bool {
        self.config.approvers.includes(principal)
    }

    /// Whether this workflow can carry exactly `levels`.
    fn carries(&self, levels: &BTreeSet<String>) -> bool {
        if self.config.levels.is_empty() {
            return levels.is_empty();
        }
        !levels.is_empty() && levels.iter().all(|l| self.config.levels.contains(l))
    }

    /// Whether this workflow grants `levels` for `duration` (checked again at approval:
    /// the stored request may have been edited, the workflow narrowed since).
    pub fn allows(&self, levels: &BTreeSet<String>, duration: Duration) -> bool {
        self.carries(levels) && duration <= self.max_duration
    }

    /// What the catalog says about this workflow.
    pub fn summary(&self) -> WorkflowSummary {
        WorkflowSummary {
            name: self.config.name.clone(),
            levels: self.config.levels.clone(),
            levels_required: !self.config.levels.is_empty(),
            default_duration: humantime::format_duration(self.default_duration).to_string(),
            max_duration: humantime::format_duration(self.max_duration).to_string(),
            reason_required: self.config.reason_required,
            approvals_required: self.config.approvals_required,
        }
    }
}

/// A workflow as the catalog shows it to a requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSummary {
    pub name: String,
    pub levels: Vec<String>,
    pub levels_required: bool,
    pub default_duration: String,
    pub max_duration: String,
    pub reason_required: bool,
    pub approvals_required: u32,
}

/// What a person asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked<'a> {
    pub cluster: &'a str,
    pub levels: &'a BTreeSet<String>,
    /// `None`: the workflow's default.
    pub duration: Option<Duration>,
    pub reason: &'a str,
}

/// A request a workflow accepted: which one, and for how long.
#[derive(Debug, Clone)]
pub struct Accepted<'w> {
    pub workflow: &'w Workflow,
    pub duration: Duration,
}

/// Why a request cannot be made. The messages are what the requester reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    #[error("no access-request workflow lets you request privilege levels on cluster {0}")]
    NoWorkflow(String),
    #[error("choose at least one privilege level to request on cluster {cluster} (--level): {choices}")]
    LevelRequired { cluster: String, choices: String },
    #[error("no workflow lets you request {asked} on cluster {cluster}; you may request: {choices}")]
    LevelsNotOffered { cluster: String, asked: String, choices: String },
    #[error("workflow {workflow} grants at most {max}; ask for less (--for)")]
    TooLong { workflow: String, max: String },
    #[error("a grant lasts at least 10s; ask for longer (--for)")]
    TooShort,
    #[error("workflow {0} requires a reason (--reason)")]
    ReasonRequired(String),
}

/// The workflows in force.
#[derive(Debug, Clone, Default)]
pub struct Workflows(Vec<Workflow>);

impl Workflows {
    pub fn new(workflows: Vec<Workflow>) -> Self {
        Self(workflows)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.0.iter().find(|w| w.name() == name)
    }

    /// Whether `grant`'s workflow still exists and would grant it as it is configured now.
    pub fn still_grants(&self, grant: &super::grants::Grant) -> bool {
        let lasts = Duration::from_secs(grant.expires_at.saturating_sub(grant.not_before).max(0) as u64);
        self.get(&grant.workflow).is_some_and(|w| w.applies_to(&grant.cluster) && w.allows(&grant.levels, lasts))
    }

    /// The workflows `principal` may request through on `cluster`, in configuration order.
    pub fn offered<'w>(&'w self, cluster: &'w str, principal: &'w Principal) -> impl Iterator<Item = &'w Workflow> {
        self.0.iter().filter(move |w| w.applies_to(cluster) && w.may_request(principal))
    }

    /// The first workflow (in configuration order) that accepts `asked` from `principal`,
    /// or why none does, naming the choices.
    pub fn accept(&self, principal: &Principal, asked: &Asked<'_>) -> Result<Accepted<'_>, RequestRefused> {
        let offered: Vec<&Workflow> =
            self.0.iter().filter(|w| w.applies_to(asked.cluster) && w.may_request(principal)).collect();
        if offered.is_empty() {
            return Err(RequestRefused::NoWorkflow(asked.cluster.to_owned()));
        }
        let choices = || {
            let levels: BTreeSet<&String> = offered.iter().flat_map(|w| &w.config.levels).collect();
            levels.into_iter().cloned().collect::<Vec<_>>().join(", ")
        };
        let Some(workflow) = offered.iter().find(|w| w.carries(asked.levels)) else {
            return Err(if asked.levels.is_empty() {
                RequestRefused::LevelRequired { cluster: asked.cluster.to_owned(), choices: choices() }
            } else {
                RequestRefused::LevelsNotOffered {
                    cluster: asked.cluster.to_owned(),
                    asked: asked.levels.iter().cloned().collect::<Vec<_>>().join(", "),
                    choices: choices(),
                }
            });
        };
        let duration = asked.duration.unwrap_or(workflow.default_duration);
        if duration < MIN_DURATION {
            return Err(RequestRefused::TooShort);
        }
        if duration > workflow.max_duration {
            return Err(RequestRefused::TooLong {
                workflow: workflow.name().to_owned(),
                max: humantime::format_duration(workflow.max_duration).to_string(),
            });
        }
        if workflow.config.reason_required && asked.reason.trim().is_empty() {
            return Err(RequestRefused::ReasonRequired(workflow.name().to_owned()));
        }
        Ok(Accepted { workflow, duration })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(yaml: &str) -> Workflow {
        let config: WorkflowConfig = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        Workflow::new(config, "workflows[0]", &["dev", "prod"]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn alice() -> Principal {
        Principal { user: "alice@example.com".into(), groups: vec!["engineering".into()], roles: vec![] }
    }

    fn levels(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ask<'a>(cluster: &'a str, levels: &'a BTreeSet<String>, reason: &'a str) -> Asked<'a> {
        Asked { cluster, levels, duration: None, reason }
    }

    #[test]
    fn a_request_goes_to_the_first_workflow_that_carries_its_levels() {
        let flows = Workflows::new(vec![
            workflow("name: oncall\nlevels: [oncall]\nreasonRequired: true\n"),
            workflow("name: admin\nlevels: [admins, oncall]\nclusters: [prod]\napprovalsRequired: 2\n"),
        ]);
        let oncall = levels(&["oncall"]);
        let accepted = flows.accept(&alice(), &ask("dev", &oncall, "INC-1")).map(|a| a.workflow.name().to_owned());
        assert_eq!(accepted, Ok("oncall".into()));
        let both = levels(&["admins", "oncall"]);
        let accepted = flows.accept(&alice(), &ask("prod", &both, "")).map(|a| a.workflow.name().to_owned());
        assert_eq!(accepted, Ok("admin".into()));
        // `admin` holds on prod only.
        assert!(matches!(
            flows.accept(&alice(), &ask("dev", &both, "")),
            Err(RequestRefused::LevelsNotOffered { choices, .. }) if choices == "oncall"
        ));
    }

    /// The rule: a workflow that lists levels needs at least one of them, unless
    /// another workflow for the cluster lists none; the refusal names the choices.
    #[test]
    fn levels_are_required_unless_a_workflow_lists_none() {
        let with_levels = workflow("name: oncall\nlevels: [oncall, debug]\n");
        let flows = Workflows::new(vec![with_levels.clone()]);
        let none = levels(&[]);
        assert_eq!(
            flows.accept(&alice(), &ask("dev", &none, "")).err().map(|e| e.to_string()).unwrap_or_default(),
            "choose at least one privilege level to request on cluster dev (--level): debug, oncall"
        );
        let flows = Workflows::new(vec![with_levels, workflow("name: break-glass\n")]);
        let accepted = flows.accept(&alice(), &ask("dev", &none, "")).map(|a| a.workflow.name().to_owned());
        assert_eq!(accepted, Ok("break-glass".into()));
    }

    #[test]
    fn duration_reason_and_requesters_are_enforced() {
        let flows = Workflows::new(vec![workflow(
            "name: oncall\nlevels: [oncall]\nmaxDuration: 2h\ndefaultDuration: 30m\nreasonRequired: true\nrequesters: {groups: [sre]}\n",
        )]);
        let oncall = levels(&["oncall"]);
        assert_eq!(
            flows.accept(&alice(), &ask("dev", &oncall, "x")).err(),
            Some(RequestRefused::NoWorkflow("dev".into()))
        );
        let sre = Principal { groups: vec!["sre".into()], ..alice() };
        let long = Asked { duration: Some(Duration::from_secs(3 * 3600)), ..ask("dev", &oncall, "x") };
        assert!(matches!(flows.accept(&sre, &long), Err(RequestRefused::TooLong { max, .. }) if max == "2h"));
        assert_eq!(
            flows.accept(&sre, &ask("dev", &oncall, "  ")).err(),
            Some(RequestRefused::ReasonRequired("oncall".into()))
        );
        let accepted = flows.accept(&sre, &ask("dev", &oncall, "INC-9")).map(|a| a.duration);
        assert_eq!(accepted, Ok(Duration::from_secs(1800)), "the default duration");
    }

    #[test]
    fn a_broken_workflow_is_refused_with_its_field() {
        let refuse = |yaml: &str| {
            let config: WorkflowConfig = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
            Workflow::new(config, "workflows[3]", &["dev"]).err().unwrap_or_default()
        };
        assert!(refuse("name: a\nclusters: [nope]\n").starts_with("workflows[3].clusters: \"nope\""));
        assert!(refuse("name: a\nlevels: [\"system:masters\"]\n").contains("`system:` groups"));
        assert!(refuse("name: a\nmaxDuration: soon\n").starts_with("workflows[3].maxDuration"));
        assert!(refuse("name: a\ndefaultDuration: 9h\n").contains("longer than maxDuration"));
        assert!(refuse("name: a\napprovalsRequired: 0\n").starts_with("workflows[3].approvalsRequired"));
        assert!(serde_yaml::from_str::<WorkflowConfig>("name: a\napprover: {}\n").is_err(), "unknown field");
    }

    #[test]
    fn approvers_are_users_groups_or_roles() {
        let w = workflow("name: a\napprovers: {users: [bob@example.com], groups: [leads], roles: [SRE]}\n");
        let bob = Principal { user: "bob@example.com".into(), groups: vec![], roles: vec![] };
        let lead = Principal { groups: vec!["leads".into()], ..alice() };
        let sre = Principal { roles: vec!["SRE".into()], ..alice() };
        assert!(w.may_approve(&bob) && w.may_approve(&lead) && w.may_approve(&sre));
        assert!(!w.may_approve(&alice()));
        assert!(workflow("name: a\n").may_request(&alice()), "no requesters: anyone");
    }
}
