//! `kubegate access`: ask for privilege levels on a cluster for a while, and approve,
//! deny or revoke such requests, through the gateway's access API
//! (`/kubegate/v1/access/...`, docs/access-requests.md).
//!
//! Every call goes through kubectl on the chosen context ([`crate::gateway_api`]), so it
//! carries the user's own credential. The API is the gateway's, not a cluster's: its
//! paths sit at the gateway's root even when the context's server URL ends in
//! `/clusters/<name>`; that suffix only supplies the default `--cluster`.

use crate::access_print as print;
use crate::gateway_api::{Gateway, KubeContext};
use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Where the access API lives, under the gateway's root.
pub const ACCESS_PATH: &str = "/kubegate/v1/access";

/// How often `--wait` asks how a request stands.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct AccessArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: AccessCommand,
}

/// What every `access` command takes, before or after its name.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The kubeconfig file (default: kubectl's).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context whose credential and gateway are used (default: the
    /// current one).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// `json` or `yaml` print the gateway's answer as it is.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// What you may request, per cluster: workflows, their levels, how long, how many
    /// approvals, whether a reason is needed.
    Catalog {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Ask for privilege levels on a cluster for a while, for an approver to grant.
    Request(RequestArgs),
    /// Your requests and grants; with --pending, the requests waiting for your approval.
    List {
        /// The pending requests you may approve, instead of your own.
        #[arg(long)]
        pending: bool,
    },
    /// Approve a pending request (you must be one of its workflow's approvers).
    Approve {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending request, saying why (the requester reads it).
    Deny {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// End a grant before its time, or withdraw a pending request.
    Revoke {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// A privilege level to ask for (repeatable). Needed unless a workflow for the
    /// cluster lists no levels; `kubegate access catalog` shows them.
    #[arg(long = "level", value_name = "LEVEL")]
    pub levels: Vec<String>,
    /// The cluster (default: the context's, when its server URL ends in
    /// `/clusters/<name>`; else the gateway's only one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// For how long, e.g. `30m`, `2h` (default: the workflow's).
    #[arg(long = "for", value_name = "DURATION", value_parser = duration_text)]
    pub duration: Option<String>,
    /// Why: a ticket or incident. Approvers read it and the audit log keeps it; some
    /// workflows require one.
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait for the decision: exits 0 once approved, 1 if denied, 2 if still pending
    /// after --timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m", requires = "wait")]
    pub timeout: Duration,
}

/// `--for` is sent as written (the gateway reads it), but a typo is caught here.
fn duration_text(text: &str) -> Result<String, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(_) => Ok(text.trim().to_owned()),
        Err(e) => Err(format!("{e} (write e.g. 30m, 2h, 1h30m)")),
    }
}

/// How a command ended, beyond success: `request --wait` tells denied from undecided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
    Refused,
    StillPending,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Done => 0,
            Exit::Refused => 1,
            Exit::StillPending => 2,
        }
    }
}

// The API's JSON (docs/access-requests.md), as far as the tables and lines use it (`-o
// json|yaml` print all of it). Unknown fields are ignored and missing or `null` ones
// read as empty: a newer gateway may say more.

/// `GET .../catalog`.
#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    #[serde(default, deserialize_with = "or_default")]
    pub clusters: Vec<ClusterOffer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterOffer {
    pub cluster: String,
    #[serde(default, deserialize_with = "or_default")]
    pub workflows: Vec<Workflow>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub levels: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub default_duration: String,
    #[serde(default, deserialize_with = "or_default")]
    pub max_duration: String,
    #[serde(default, deserialize_with = "or_default")]
    pub reason_required: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub approvals_required: u32,
}

/// `GET .../requests`.
#[derive(Debug, Clone, Deserialize)]
pub struct ViewList {
    #[serde(default, deserialize_with = "or_default")]
    pub items: Vec<View>,
}

/// One request as the API shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub cluster: String,
    #[serde(default, deserialize_with = "or_default")]
    pub workflow: String,
    #[serde(default, deserialize_with = "or_default")]
    pub requester: String,
    #[serde(default, deserialize_with = "or_default")]
    pub levels: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
    pub phase: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub approvals_required: u32,
    #[serde(default, deserialize_with = "or_default")]
    pub approvals: Vec<Approval>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decision_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    #[serde(default, deserialize_with = "or_default")]
    pub by: String,
}

/// Where a request stands, as far as `--wait` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Approved,
    /// Denied, Expired, Revoked, or a phase this CLI does not know: no grant to wait for.
    Ended,
}

impl View {
    pub fn phase(&self) -> Phase {
        match self.phase.to_ascii_lowercase().as_str() {
            "pending" => Phase::Pending,
            "approved" => Phase::Approved,
            _ => Phase::Ended,
        }
    }

    /// Approvals still missing.
    pub fn approvals_needed(&self) -> u32 {
        let given = u32::try_from(self.approvals.len()).unwrap_or(u32::MAX);
        self.approvals_required.saturating_sub(given)
    }
}

/// `null` reads as the default, like a missing field.
fn or_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The answer as the gateway wrote it, for `-o json|yaml`: serde_yaml's mapping keeps
/// the gateway's key order, where serde_json's map would sort the keys.
pub type Document = serde_yaml::Value;

/// A parsed answer and the document it came from.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub doc: Document,
}

impl<T: DeserializeOwned> Answer<T> {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let unlike = |e: serde_json::Error| {
            anyhow::anyhow!(
                "the server did not answer like a kubegate gateway with the access API ({e}); is this context's \
                 server kubegate?"
            )
        };
        let value = serde_json::from_str(text).map_err(unlike)?;
        let doc = serde_json::from_str(text).map_err(unlike)?;
        Ok(Self { value, doc })
    }
}

/// `POST .../requests`. Absent options are left out: the gateway applies the
/// workflow's default duration, the only cluster, and decides whether a reason is due.
#[derive(Debug, Serialize)]
pub struct RequestBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<&'a str>,
    pub levels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> RequestBody<'a> {
    /// `context_cluster`: the cluster the context's server URL names, the default.
    pub fn new(args: &'a RequestArgs, context_cluster: Option<&'a str>) -> Self {
        Self {
            cluster: args.cluster.as_deref().or(context_cluster),
            levels: &args.levels,
            duration: args.duration.as_deref(),
            reason: args.reason.as_deref(),
        }
    }
}

/// `POST .../requests/<name>/approve|deny|revoke`.
#[derive(Debug, Serialize)]
pub struct DecisionBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Runs one `access` command.
pub fn run(args: &AccessArgs) -> anyhow::Result<Exit> {
    // A mistyped name is refused before kubectl runs (or logs anyone in).
    if let AccessCommand::Approve { name, .. } | AccessCommand::Deny { name, .. } | AccessCommand::Revoke { name, .. } =
        &args.command
    {
        check_name(name)?;
    }
    let context =
        KubeContext { kubeconfig: args.common.kubeconfig.as_deref(), context: args.common.context.as_deref() };
    let api = AccessApi { gateway: Gateway::open(context)? };
    let out = Printer { output: args.common.output };
    match &args.command {
        AccessCommand::Catalog { cluster } => catalog(&api, out, cluster.as_deref()),
        AccessCommand::Request(request_args) => request(&api, out, request_args),
        AccessCommand::List { pending } => list(&api, out, *pending),
        AccessCommand::Approve { name, reason } => decide(&api, out, name, "approve", reason.as_deref()),
        AccessCommand::Deny { name, reason } => decide(&api, out, name, "deny", Some(reason)),
        AccessCommand::Revoke { name, reason } => decide(&api, out, name, "revoke", reason.as_deref()),
    }
}

/// Request names go into URL paths: only Kubernetes object names (DNS subdomains) pass.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = name.len() <= 253
        && alnum(name.bytes().next())
        && alnum(name.bytes().last())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    anyhow::ensure!(ok, "{name:?} is not an access request's name (like ar-7c3f1; `kubegate access list` shows them)");
    Ok(())
}

/// The access API on one context's gateway.
struct AccessApi<'a> {
    gateway: Gateway<'a>,
}

impl AccessApi<'_> {
    fn path(&self, rest: &str) -> String {
        format!("{}{ACCESS_PATH}{rest}", self.gateway.server().gateway_path())
    }

    fn get<T: DeserializeOwned>(&self, rest: &str, what: &str) -> anyhow::Result<Answer<T>> {
        Answer::parse(&self.gateway.get_raw(&self.path(rest), &[], what)?)
    }

    fn post<T: DeserializeOwned>(&self, rest: &str, body: &impl Serialize, what: &str) -> anyhow::Result<Answer<T>> {
        let body = serde_json::to_vec(body)?;
        Answer::parse(&self.gateway.create_raw(&self.path(rest), &body, what)?)
    }
}

/// Where output goes: tables and lines for people, or the gateway's document.
#[derive(Debug, Clone, Copy)]
struct Printer {
    output: Output,
}

impl Printer {
    /// A line for a person: stdout, or stderr when stdout carries JSON or YAML.
    fn say(self, line: &str) {
        match self.output {
            Output::Table => println!("{line}"),
            Output::Json | Output::Yaml => eprintln!("{line}"),
        }
    }

    /// Prints `doc` if JSON or YAML was asked for; says whether it did.
    fn document(self, doc: &Document) -> anyhow::Result<bool> {
        match print::document(doc, self.output)? {
            Some(text) => print!("{text}"),
            None => return Ok(false),
        }
        Ok(true)
    }
}

fn catalog(api: &AccessApi<'_>, out: Printer, cluster: Option<&str>) -> anyhow::Result<Exit> {
    let mut answer: Answer<Catalog> = api.get("/catalog", "what you may request")?;
    if let Some(name) = cluster {
        only_cluster(&mut answer, name);
    }
    if out.document(&answer.doc)? {
        return Ok(Exit::Done);
    }
    match (answer.value.clusters.is_empty(), cluster) {
        (true, Some(name)) => eprintln!("kubegate: there is nothing you may request on cluster {name}"),
        (true, None) => eprintln!("kubegate: there is nothing you may request at this gateway"),
        (false, _) => print!("{}", print::catalog_table(&answer.value)),
    }
    Ok(Exit::Done)
}

/// Narrows a catalog, and its document, to one cluster.
pub fn only_cluster(answer: &mut Answer<Catalog>, name: &str) {
    answer.value.clusters.retain(|c| c.cluster == name);
    if let Some(clusters) = answer.doc.get_mut("clusters").and_then(Document::as_sequence_mut) {
        clusters.retain(|c| c.get("cluster").and_then(Document::as_str) == Some(name));
    }
}

fn request(api: &AccessApi<'_>, out: Printer, args: &RequestArgs) -> anyhow::Result<Exit> {
    let body = RequestBody::new(args, api.gateway.server().cluster());
    let answer: Answer<View> = api.post("/requests", &body, "to make your access request")?;
    out.say(&print::summary(&answer.value, SystemTime::now()));
    if !args.wait {
        out.document(&answer.doc)?;
        return Ok(Exit::Done);
    }
    let name = answer.value.name.clone();
    check_name(&name)?;
    let (path, what) = (format!("/requests/{name}"), format!("how access request {name} stands"));
    let patience = Patience { timeout: args.timeout, every: POLL_EVERY };
    let waited = wait_for_decision(answer, patience, &mut WallClock(Instant::now()), || api.get(&path, &what))?;
    report(out, &waited, args.timeout)
}

/// The end of `--wait`: the decision, or how to follow a request still pending.
fn report(out: Printer, waited: &Waited, timeout: Duration) -> anyhow::Result<Exit> {
    let now = SystemTime::now();
    let (answer, exit) = match waited {
        Waited::Approved(answer) => (answer, Exit::Done),
        Waited::Ended(answer) => (answer, Exit::Refused),
        Waited::StillPending(answer) => (answer, Exit::StillPending),
    };
    if exit != Exit::StillPending {
        out.say(&format!("...{}", print::state(&answer.value, now)));
    }
    out.document(&answer.doc)?;
    if exit == Exit::StillPending {
        eprintln!("kubegate: {}", print::still_pending(&answer.value, timeout));
    }
    Ok(exit)
}

fn list(api: &AccessApi<'_>, out: Printer, pending: bool) -> anyhow::Result<Exit> {
    let (path, what) = match pending {
        true => ("/requests?pending=true", "which access requests wait for your approval"),
        false => ("/requests", "for your access requests"),
    };
    let answer: Answer<ViewList> = api.get(path, what)?;
    if out.document(&answer.doc)? {
        return Ok(Exit::Done);
    }
    match (answer.value.items.is_empty(), pending) {
        (true, true) => eprintln!("kubegate: no access request waits for your approval"),
        (true, false) => eprintln!("kubegate: you have no access requests"),
        (false, _) => print!("{}", print::requests_table(&answer.value.items, SystemTime::now())),
    }
    Ok(Exit::Done)
}

/// `verb` is approve, deny or revoke: the path's last segment.
fn decide(api: &AccessApi<'_>, out: Printer, name: &str, verb: &str, reason: Option<&str>) -> anyhow::Result<Exit> {
    let body = DecisionBody { reason };
    let answer: Answer<View> = api.post(&format!("/requests/{name}/{verb}"), &body, &format!("to {verb} {name}"))?;
    out.say(&print::summary(&answer.value, SystemTime::now()));
    out.document(&answer.doc)?;
    Ok(Exit::Done)
}

/// How long `--wait` waits, and how often it asks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub timeout: Duration,
    pub every: Duration,
}

/// Time for [`wait_for_decision`], so tests need not sleep.
pub trait Clock {
    /// Since the wait began.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, pause: Duration);
}

struct WallClock(Instant);

impl Clock for WallClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&mut self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

/// How a wait ended, with the last answer.
#[derive(Debug)]
pub enum Waited {
    Approved(Answer<View>),
    /// Denied, revoked, expired: it will not be approved.
    Ended(Answer<View>),
    StillPending(Answer<View>),
}

/// Asks (`fetch`) every `patience.every` until the request leaves Pending or the
/// timeout passes. A failed ask ends the wait with its error: kubectl has said why.
pub fn wait_for_decision(
    mut latest: Answer<View>,
    patience: Patience,
    clock: &mut impl Clock,
    mut fetch: impl FnMut() -> anyhow::Result<Answer<View>>,
) -> anyhow::Result<Waited> {
    loop {
        match latest.value.phase() {
            Phase::Approved => return Ok(Waited::Approved(latest)),
            Phase::Ended => return Ok(Waited::Ended(latest)),
            Phase::Pending => {}
        }
        let left = patience.timeout.saturating_sub(clock.elapsed());
        if left.is_zero() {
            return Ok(Waited::StillPending(latest));
        }
        clock.sleep(patience.every.min(left));
        latest = fetch()?;
    }
}

#[cfg(test)]
mod tests;
