//! authz-server's configuration file (YAML). Unknown fields are errors, and every error
//! names the file and, where serde can tell, the line and column.

use crate::access::workflow::{AccessRequestsConfig, Workflow, WorkflowConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Address of the gRPC ext_authz and health service. Default `127.0.0.1:9001`:
    /// beside Envoy, on loopback. Any other address needs `grpcTls`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Mutual TLS on `listen`, for an authz-server Envoy reaches over a network.
    #[serde(default)]
    pub grpc_tls: Option<GrpcTlsConfig>,
    /// Prometheus metrics at `/metrics` on this address; off when unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// HTTP probes for kubelet on this address: `/healthz` (the process serves) and
    /// `/readyz` (some issuer's keys are loaded), so the ext_authz port can stay on
    /// loopback. Off when unset.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// How many verified tokens to remember (0 turns the cache off). Default 10,000.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: usize,
    /// How many decisions to remember (0 turns the cache off). Default 10,000.
    #[serde(default = "default_decision_cache_size")]
    pub decision_cache_size: usize,
    /// How long a decision is remembered at most, in seconds (never past the token's
    /// `exp`; a reload forgets everything). Default 5.
    #[serde(default = "default_decision_cache_seconds")]
    pub decision_cache_seconds: u64,
    /// The OpenID Connect issuers whose tokens are accepted. At least one.
    pub issuers: Vec<IssuerConfig>,
    /// The clusters behind this gateway, how a request names one, and how identities
    /// reach each. After loading this is never empty.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// The single-cluster form of `clusters` (one entry), kept so configurations written
    /// before `clusters` existed still load. Moved into `clusters` at load.
    #[serde(default)]
    cluster: Option<ClusterConfig>,
    /// Standing roles: who holds which privilege levels.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Cedar policy files, or directories of `*.cedar` files, relative to this file.
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
    /// The HTTP API for access requests (`/kubegate/v1/access/`), which Envoy routes
    /// here; on loopback, beside Envoy. Off when unset.
    #[serde(default)]
    pub api_listen: Option<SocketAddr>,
    /// Where access requests are stored and how approvals are signed; needed by
    /// `workflows`.
    #[serde(default)]
    pub access_requests: Option<AccessRequestsConfig>,
    /// Access-request workflows: who may request which privilege levels, and who
    /// approves (docs/access-requests.md).
    #[serde(default)]
    pub workflows: Vec<WorkflowConfig>,
    /// Resource discovery: watch each cluster's RBAC for admins (docs/discovery.md).
    /// Off when unset.
    #[serde(default)]
    pub discovery: Option<crate::discovery::DiscoveryConfig>,
}

/// Mutual TLS for the ext_authz listener: this server's certificate, and the CA whose
/// client certificates (Envoy's) may call it. Paths are used as given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

/// One cluster behind this gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// The cluster's name (a DNS label): the `k8s::Cluster` entity policies refer to,
    /// the `/clusters/<name>` path prefix that selects it, and the decision's `cluster`.
    /// Default `default`.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// Host names that select this cluster, by TLS server name or `:authority`
    /// (`prod.kubegate.example.com`). Compared case-insensitively, without port or
    /// trailing dot.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Labels policies can test (`resource.getTag("env") == "prod"`); every resource
    /// of the cluster carries them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How a request's identity reaches the API server. Default `impersonate`.
    #[serde(default)]
    pub identity_mode: IdentityMode,
    /// Also impersonate the user's IdP groups (prefix applied). Default false.
    #[serde(default)]
    pub include_idp_groups: bool,
    /// Also impersonate the names of the user's standing roles, transformed as Kubernetes
    /// group names (lower case, spaces to hyphens, periods dropped). Default false.
    #[serde(default)]
    pub include_role_names: bool,
    /// The gateway's own user name, impersonated in `leasedWithLevels` mode.
    #[serde(default = "default_gateway_user")]
    pub gateway_user: String,
    /// How authz-server itself reaches this cluster's API server, as the gateway: for
    /// its upstream health check (and resource discovery). Envoy's route to the cluster
    /// is configured on Envoy's side. Off when unset.
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
}

/// authz-server's own connection to a cluster's API server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// Pod identity: the cluster kubegate runs in, as its pod's service account.
    /// Defaults `server` to `https://kubernetes.default.svc`, and `caFile` and
    /// `tokenFile` to the service-account volume's `ca.crt` and `token`.
    #[serde(default)]
    pub in_cluster: bool,
    /// The API server's URL (https).
    #[serde(default)]
    pub server: Option<String>,
    /// PEM CA bundle the API server's certificate must chain to (default: system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A bearer token file, re-read for every request (kubelet rotates projected tokens).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A client certificate and key (PEM) instead of a token.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The periodic check that the API server answers the gateway.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
}

/// Where pod identity's credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl UpstreamConfig {
    /// The server URL, with the in-cluster default.
    pub fn server(&self) -> Option<String> {
        self.server.clone().or_else(|| self.in_cluster.then(|| "https://kubernetes.default.svc".to_owned()))
    }

    /// The CA file, with the in-cluster default.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca_file.clone().or_else(|| self.in_cluster.then(|| Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt")))
    }

    /// The token file, with the in-cluster default (none when a client certificate is set).
    pub fn token_file(&self) -> Option<PathBuf> {
        let in_cluster_token = self.in_cluster && self.client_cert_file.is_none();
        self.token_file.clone().or_else(|| in_cluster_token.then(|| Path::new(SERVICE_ACCOUNT_DIR).join("token")))
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        let server = self.server().ok_or_else(|| format!("{at}.server: required unless inCluster is true"))?;
        let url = url::Url::parse(&server).map_err(|e| format!("{at}.server: {server:?}: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!("{at}.server: must be https, got {server}"));
        }
        // Envoy's route reaches the server's host and port only: a path here would be
        // where authz-server looks, not where requests go.
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!(
                "{at}.server: {server} has a path or query; give the API server's scheme, host and port only"
            ));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(format!("{at}: clientCertFile and clientKeyFile go together"));
        }
        if self.token_file.is_some() && self.client_cert_file.is_some() {
            return Err(format!("{at}: a token or a client certificate, not both"));
        }
        if self.health_check.interval_seconds == 0 {
            return Err(format!("{at}.healthCheck.intervalSeconds: must be at least 1"));
        }
        Ok(())
    }

    /// Relative paths are relative to the configuration file.
    fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.ca_file, &mut self.token_file, &mut self.client_cert_file, &mut self.client_key_file] {
            if let Some(p) = path.as_mut() {
                *p = base.join(&*p);
            }
        }
    }
}

/// The upstream health check: a cheap read, as the gateway, in one namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckConfig {
    /// The namespace read (`GET /api/v1/namespaces/<namespace>`). Default `default`.
    #[serde(default = "default_health_namespace")]
    pub namespace: String,
    /// Seconds between checks. Default 10.
    #[serde(default = "default_health_interval")]
    pub interval_seconds: u64,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self { namespace: default_health_namespace(), interval_seconds: default_health_interval() }
    }
}

fn default_health_namespace() -> String {
    "default".into()
}
fn default_health_interval() -> u64 {
    10
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: default_cluster_name(),
            hosts: Vec::new(),
            tags: BTreeMap::new(),
            identity_mode: IdentityMode::default(),
            include_idp_groups: false,
            include_role_names: false,
            gateway_user: default_gateway_user(),
            upstream: None,
        }
    }
}

/// How the API server sees a request (see docs/configuration.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMode {
    /// User = the person; groups = their privilege levels.
    #[default]
    Impersonate,
    /// User = the gateway's own identity; groups = the person's privilege levels.
    LeasedWithLevels,
    /// No impersonation: the gateway's own credential alone; kubegate audits the person.
    Leased,
}

/// A standing role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleConfig {
    pub name: String,
    #[serde(default)]
    pub members: RoleMembers,
    /// The Kubernetes groups members get.
    #[serde(default)]
    pub privilege_levels: Vec<String>,
    /// The clusters the role holds on, by name; empty means every cluster.
    #[serde(default)]
    pub clusters: Vec<String>,
}

impl RoleConfig {
    /// Whether the role holds on the cluster called `cluster`.
    pub fn applies_to(&self, cluster: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster)
    }
}

/// Who holds a role: named users, or anyone in one of the IdP groups.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMembers {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

fn default_cluster_name() -> String {
    "default".into()
}
fn default_gateway_user() -> String {
    "system:serviceaccount:kubegate:kubegate".into()
}

/// A role name as a Kubernetes group: lower case, spaces to hyphens, periods dropped
/// (`Site Reliability.Team` is `site-reliabilityteam`).
pub fn role_group_name(role: &str) -> String {
    role.to_lowercase().replace(' ', "-").replace('.', "")
}

/// Whether `name` is a DNS label (RFC 1123, lower case): what a cluster name must be
/// to appear plainly in a host name and a path segment.
pub fn is_dns_label(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=63).contains(&name.len()) && name.chars().all(ok) && !name.starts_with('-') && !name.ends_with('-')
}

/// A host as kubegate compares it: lower case, without a port or one trailing dot.
/// `None` when it is not a plain DNS name or IP address (`[::1]` keeps its brackets).
pub fn normal_host(authority: &str) -> Option<String> {
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { authority })
            .to_owned(),
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':');
    (!host.is_empty() && host.chars().all(ok) && !host.contains("..")).then_some(host)
}

/// The prefix of Kubernetes' reserved user and group names.
pub const RESERVED_PREFIX: &str = "system:";

/// Characters that vanish at the edges of a name on its way to the API server, or that
/// cannot be told apart from nothing: Unicode white space (Go's textproto trims spaces
/// and tabs from header values, other software trims more) and zero-width characters.
fn is_invisible_at_edge(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}')
}

/// Why `name` cannot be a Kubernetes user, group or uid as is: white space (or a
/// zero-width character) at either end, which the API server's header parsing trims so
/// that `" system:masters"` arrives as `system:masters`, or a control character
/// anywhere. `None` when the name is usable.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.starts_with(is_invisible_at_edge) || name.ends_with(is_invisible_at_edge) {
        Some("has leading or trailing white space")
    } else {
        None
    }
}

/// Whether `name` is, or becomes once trimmed the way any hop may trim it, a reserved
/// `system:` name.
pub fn is_reserved_name(name: &str) -> bool {
    name.trim_matches(|c: char| is_invisible_at_edge(c) || c.is_control()).starts_with(RESERVED_PREFIX)
}

/// One trusted OpenID Connect issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerConfig {
    /// The issuer URL, exactly as it appears in tokens' `iss` claim; discovery is read
    /// from `<url>/.well-known/openid-configuration`.
    pub url: String,
    /// Accepted audiences: a token's `aud` must contain one (the gateway's client id).
    pub audiences: Vec<String>,
    /// Accepted signing algorithms. Default RS256, ES256, EdDSA; only asymmetric
    /// algorithms can be configured (never `none`, never HMAC).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim holding the Kubernetes user name (a name, or a dot path such as
    /// `profile.login`). Default `email`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Prepended to every user name (e.g. `oidc:`). Default none.
    #[serde(default)]
    pub username_prefix: String,
    /// With `usernameClaim: email`, require `email_verified: true`. Default true.
    #[serde(default = "default_true")]
    pub require_email_verified: bool,
    /// Claim holding the user's IdP groups (a name or a dot path such as
    /// `realm_access.roles`; a string or a list). Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Prepended to every group. Default none.
    #[serde(default)]
    pub groups_prefix: String,
    /// Claim sent as `Impersonate-Uid`. Default `sub`.
    #[serde(default = "default_uid_claim")]
    pub uid_claim: String,
    /// Claims that must be present with these values (a list claim must contain it).
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// Accept user names and groups starting with `system:` after prefixing. Default
    /// false: nobody becomes `system:masters` through their identity provider.
    #[serde(default)]
    pub allow_reserved_names: bool,
    /// This entry knowingly shares user names with other entries whose
    /// `usernamePrefix` is the same or extends the other's (both entries must say so).
    /// Default false: two entries with one prefix (both empty included) are refused at
    /// load, since each could mint the other's users; where one prefix extends another
    /// (`bot:` and none), the shorter entry's names under the longer prefix are refused.
    #[serde(default)]
    pub allow_shared_usernames: bool,
    /// As `allowSharedUsernames`, for `groupsPrefix` and the groups each entry asserts.
    #[serde(default)]
    pub allow_shared_groups: bool,
    /// PEM bundle trusted for the issuer's TLS, instead of the system's web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds. Default 60.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Upper bound of the background key refresh interval; a JWKS `Cache-Control:
    /// max-age` shortens it (to no less than 30 s). Default 300.
    #[serde(default = "default_key_refresh")]
    pub key_refresh_seconds: u64,
    /// A token with an unknown `kid` refetches the JWKS at most once per this many
    /// seconds. Default 10.
    #[serde(default = "default_unknown_key_refetch")]
    pub unknown_key_refetch_seconds: u64,
    /// While the issuer cannot be reached, cached keys keep validating tokens for at
    /// most this long after the last successful fetch. Default 86400 (a day).
    #[serde(default = "default_max_key_staleness")]
    pub max_key_staleness_seconds: u64,
}

fn default_decision_cache_size() -> usize {
    10_000
}
fn default_decision_cache_seconds() -> u64 {
    5
}
fn default_token_cache_size() -> usize {
    10_000
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn default_true() -> bool {
    true
}
fn default_key_refresh() -> u64 {
    300
}
fn default_unknown_key_refetch() -> u64 {
    10
}
fn default_max_key_staleness() -> u64 {
    86_400
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9001))
}
fn default_username_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_uid_claim() -> String {
    "sub".into()
}
fn default_clock_skew() -> u64 {
    60
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The cause is in the message, so it is not also a `source` (which would print it
    // twice in an error chain).
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The YAML does not parse or does not match the schema; serde's message carries
    /// the line and column.
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: serde_yaml::Error },
    /// The file parses but says something impossible.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Reads and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        let mut config = Self::parse(&text, path)?;
        // Policy paths are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        config.policy_files = config.policy_files.iter().map(|p| base.join(p)).collect();
        for upstream in config.clusters.iter_mut().filter_map(|c| c.upstream.as_mut()) {
            upstream.resolve_paths(base);
        }
        if let Some(access) = config.access_requests.as_mut() {
            access.signing_key_file = base.join(&access.signing_key_file);
        }
        Ok(config)
    }

    /// Every policy file: the listed files, and the `*.cedar` files of listed
    /// directories, in name order.
    pub fn policy_paths(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut paths = Vec::new();
        for entry in &self.policy_files {
            if entry.is_dir() {
                let listing =
                    std::fs::read_dir(entry).map_err(|error| ConfigError::Read { path: entry.clone(), error })?;
                let mut files: Vec<PathBuf> = listing
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
                    .collect();
                files.sort();
                paths.extend(files);
            } else {
                paths.push(entry.clone());
            }
        }
        Ok(paths)
    }

    /// Parses configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config =
            serde_yaml::from_str(text).map_err(|error| ConfigError::Parse { path: path.to_owned(), error })?;
        let invalid = |reason| ConfigError::Invalid { path: path.to_owned(), reason };
        match (config.cluster.take(), config.clusters.is_empty()) {
            (Some(_), false) => return Err(invalid("`cluster` and `clusters` are both set: use `clusters`".into())),
            (single, true) => config.clusters.push(single.unwrap_or_default()),
            (None, false) => {}
        }
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        if self.issuers.is_empty() {
            return Err("issuers: at least one issuer is required".into());
        }
        // The channel carries users' tokens and decides who requests run as: plaintext
        // only where it cannot leave the host (or the pod's network namespace).
        if !self.listen.ip().is_loopback() && self.grpc_tls.is_none() {
            return Err(format!(
                "listen: {} is not a loopback address: run authz-server beside Envoy on 127.0.0.1, or set grpcTls (mutual TLS) for Envoy to reach it over a network",
                self.listen
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let url = url::Url::parse(&issuer.url).map_err(|e| format!("issuers[{i}].url: {e}"))?;
            if url.scheme() != "https" {
                return Err(format!("issuers[{i}].url: must be https, got {}", issuer.url));
            }
            if issuer.audiences.is_empty() || issuer.audiences.iter().any(String::is_empty) {
                return Err(format!("issuers[{i}].audiences: at least one non-empty audience is required"));
            }
            if issuer.algorithms.is_empty() {
                return Err(format!("issuers[{i}].algorithms: at least one algorithm is required"));
            }
            for name in &issuer.algorithms {
                parse_algorithm(name).map_err(|reason| format!("issuers[{i}].algorithms: {reason}"))?;
            }
            for (field, prefix) in
                [("usernamePrefix", &issuer.username_prefix), ("groupsPrefix", &issuer.groups_prefix)]
            {
                if is_reserved_name(prefix) && !issuer.allow_reserved_names {
                    return Err(format!("issuers[{i}].{field}: {prefix:?} would produce reserved `system:` names"));
                }
                // Trailing space inside a prefix is part of the name; at the start it
                // would be trimmed off by the API server.
                if prefix.chars().any(char::is_control) || prefix.starts_with(is_invisible_at_edge) {
                    return Err(format!(
                        "issuers[{i}].{field}: {prefix:?} starts with white space or contains a control character; every name it produced would be refused"
                    ));
                }
            }
        }
        // One issuer may appear more than once (people and bots, with their own claim
        // mappings) if the audiences tell its tokens apart.
        let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for (i, role) in self.roles.iter().enumerate() {
            if role.name.trim().is_empty() {
                return Err(format!("roles[{i}].name: a role needs a name"));
            }
            if let Some(other) = seen.insert(role_group_name(&role.name), &role.name) {
                return Err(format!(
                    "roles[{i}].name: roles {other:?} and {:?} are the same group name {:?} once lower-cased, spaces made hyphens and periods dropped",
                    role.name,
                    role_group_name(&role.name)
                ));
            }
            if let Some(problem) = name_problem(&role.name) {
                return Err(format!("roles[{i}].name: role {:?} {problem}", role.name));
            }
            // With `cluster.includeRoleNames` the role's group name is impersonated: it
            // must not be a reserved name once transformed (`System:Masters`,
            // `sys.tem:masters`). Refused whatever that setting says, since a reload may
            // turn it on.
            let group = role_group_name(&role.name);
            if is_reserved_name(&group) {
                return Err(format!(
                    "roles[{i}].name: role {:?} would be impersonated as the reserved Kubernetes group {group:?} (role names become groups lower-cased, spaces made hyphens and periods dropped, with cluster.includeRoleNames); rename the role",
                    role.name
                ));
            }
            for level in &role.privilege_levels {
                if is_reserved_name(level) {
                    return Err(format!(
                        "roles[{i}].privilegeLevels: {level:?} of role {:?}: `system:` groups cannot be privilege levels",
                        role.name
                    ));
                }
                if let Some(problem) = name_problem(level) {
                    return Err(format!(
                        "roles[{i}].privilegeLevels: {level:?} of role {:?} {problem}, which Kubernetes would not keep as written",
                        role.name
                    ));
                }
            }
        }
        self.validate_clusters()?;
        self.validate_access_requests()?;
        if let Some(discovery) = &self.discovery {
            discovery.drop_after()?;
            discovery.cluster_names(self)?;
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let overlapping = self.issuers[..i]
                .iter()
                .any(|other| other.url == issuer.url && other.audiences.iter().any(|a| issuer.audiences.contains(a)));
            if overlapping {
                return Err(format!(
                    "issuers[{i}]: {} is configured twice with a shared audience; entries for one issuer need disjoint audiences",
                    issuer.url
                ));
            }
        }
        self.validate_issuer_namespaces()
    }

    /// The workflows, checked and with their durations read.
    pub fn workflows(&self) -> Result<Vec<Workflow>, String> {
        let clusters: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut names = std::collections::BTreeSet::new();
        let mut workflows = Vec::new();
        for (i, config) in self.workflows.iter().enumerate() {
            if !names.insert(config.name.as_str()) {
                return Err(format!("workflows[{i}].name: {:?} is used by an earlier workflow", config.name));
            }
            workflows.push(Workflow::new(config.clone(), &format!("workflows[{i}]"), &clusters)?);
        }
        Ok(workflows)
    }

    fn validate_access_requests(&self) -> Result<(), String> {
        self.workflows()?;
        if let Some(addr) = self.api_listen.filter(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "apiListen: {addr} is not a loopback address: the API carries users' tokens in plain HTTP, so it listens beside Envoy on 127.0.0.1"
            ));
        }
        let Some(access) = &self.access_requests else {
            if !self.workflows.is_empty() {
                return Err("workflows: need accessRequests (where requests are stored, and the signing key)".into());
            }
            return Ok(());
        };
        let cluster = self
            .cluster(&access.cluster)
            .ok_or_else(|| format!("accessRequests.cluster: {:?} is not one of the clusters", access.cluster))?;
        if cluster.upstream.is_none() {
            return Err(format!(
                "accessRequests.cluster: cluster {:?} has no upstream: authz-server stores access requests through it",
                access.cluster
            ));
        }
        if !is_dns_label(&access.namespace) {
            return Err(format!("accessRequests.namespace: {:?} is not a namespace name", access.namespace));
        }
        Ok(())
    }

    /// Cluster names are DNS labels and unique, host names belong to one cluster, and
    /// roles name clusters that exist.
    fn validate_clusters(&self) -> Result<(), String> {
        let mut hosts: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if !is_dns_label(&cluster.name) {
                return Err(format!(
                    "clusters[{i}].name: {:?} is not a DNS label (lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit)",
                    cluster.name
                ));
            }
            if self.clusters[..i].iter().any(|c| c.name == cluster.name) {
                return Err(format!("clusters[{i}].name: cluster {:?} is configured twice", cluster.name));
            }
            if let Some(problem) = name_problem(&cluster.gateway_user) {
                return Err(format!("clusters[{i}].gatewayUser: {:?} {problem}", cluster.gateway_user));
            }
            for host in &cluster.hosts {
                // A port would be dropped when comparing: refuse it rather than ignore it.
                let written = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
                let normal = normal_host(host).filter(|h| h == &written).ok_or_else(|| {
                    format!("clusters[{i}].hosts: {host:?} is not a host name (no scheme, port or path)")
                })?;
                if let Some(other) = hosts.insert(normal, &cluster.name) {
                    return Err(format!("clusters[{i}].hosts: {host:?} already selects cluster {other:?}"));
                }
            }
            if let Some(upstream) = &cluster.upstream {
                upstream.validate(&format!("clusters[{i}].upstream"))?;
            }
            for (key, value) in &cluster.tags {
                if key.is_empty() || key.chars().chain(value.chars()).any(char::is_control) {
                    return Err(format!("clusters[{i}].tags: {key:?}: tag names must be non-empty, and neither names nor values may hold control characters"));
                }
            }
        }
        for (i, role) in self.roles.iter().enumerate() {
            if let Some(unknown) = role.clusters.iter().find(|c| self.cluster(c).is_none()) {
                return Err(format!(
                    "roles[{i}].clusters: role {:?} names cluster {unknown:?}, which is not configured",
                    role.name
                ));
            }
        }
        Ok(())
    }

    /// Two entries with the same user-name prefix (both empty included) can each mint
    /// the other's users, and likewise for groups: refused unless both entries say the
    /// sharing is intended. (A prefix that merely extends another, such as `bot:` and
    /// none, is guarded per token instead: the shorter entry's names that fall under the
    /// longer prefix are refused, see `TokenValidator`.)
    fn validate_issuer_namespaces(&self) -> Result<(), String> {
        for (i, issuer) in self.issuers.iter().enumerate() {
            for (j, other) in self.issuers.iter().enumerate().take(i) {
                let checks = [
                    (
                        "usernamePrefix",
                        &issuer.username_prefix,
                        &other.username_prefix,
                        issuer.allow_shared_usernames && other.allow_shared_usernames,
                        "user names",
                        "allowSharedUsernames",
                    ),
                    (
                        "groupsPrefix",
                        &issuer.groups_prefix,
                        &other.groups_prefix,
                        issuer.allow_shared_groups && other.allow_shared_groups,
                        "groups",
                        "allowSharedGroups",
                    ),
                ];
                for (field, prefix, other_prefix, allowed, what, flag) in checks {
                    if prefix == other_prefix && !allowed {
                        let shown = if prefix.is_empty() { "none".to_string() } else { format!("{prefix:?}") };
                        return Err(format!(
                            "issuers[{j}] ({}) and issuers[{i}] ({}) have the same {field} ({shown}), so either could mint the other's {what}: give each entry its own {field} (e.g. \"people:\" and \"bots:\"), or set `{flag}: true` on both entries if they are meant to share {what}",
                            other.url, issuer.url
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl IssuerConfig {
    /// The allowed clock skew.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_seconds)
    }

    /// The accepted algorithms (validated at load, so none is dropped here).
    pub fn accepted_algorithms(&self) -> Vec<jsonwebtoken::Algorithm> {
        self.algorithms.iter().filter_map(|name| parse_algorithm(name).ok()).collect()
    }
}

/// An asymmetric JWS algorithm by its registered name.
pub fn parse_algorithm(name: &str) -> Result<jsonwebtoken::Algorithm, String> {
    use jsonwebtoken::Algorithm::*;
    match name {
        "RS256" => Ok(RS256),
        "RS384" => Ok(RS384),
        "RS512" => Ok(RS512),
        "PS256" => Ok(PS256),
        "PS384" => Ok(PS384),
        "PS512" => Ok(PS512),
        "ES256" => Ok(ES256),
        "ES384" => Ok(ES384),
        "EdDSA" => Ok(EdDSA),
        "HS256" | "HS384" | "HS512" => {
            Err(format!("{name} is a shared-secret algorithm; only the issuer's public keys may verify tokens"))
        }
        "none" => Err("`none` means unsigned tokens; refused".into()),
        other => Err(format!("unknown algorithm {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/kubegate/authz.yaml"))
    }

    /// Access requests: a broken workflow or store is refused with its field, at load
    /// (and so at reload, where the last good rules keep serving).
    #[test]
    fn access_requests_are_checked_at_load() {
        let base = "issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n";
        let upstream = "cluster: {name: dev, upstream: {server: \"https://10.0.0.1:6443\"}}\n";
        let store = "accessRequests: {cluster: dev, signingKeyFile: key}\n";
        let refused = |extra: &str| parse(&format!("{base}{extra}")).err().map(|e| e.to_string()).unwrap_or_default();
        let ok = parse(&format!(
            "{base}{upstream}{store}apiListen: 127.0.0.1:9003\nworkflows:\n- name: oncall\n  levels: [oncall]\n"
        ));
        let ok = ok.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.workflows().map(|w| w.len()), Ok(1));
        assert_eq!(ok.access_requests.map(|a| a.namespace), Some("kubegate".to_string()));
        assert!(refused("workflows:\n- name: a\n").contains("workflows: need accessRequests"));
        assert!(refused(&format!("{upstream}{store}workflows:\n- name: a\n- name: a\n")).contains("workflows[1].name"));
        assert!(refused(&format!("{upstream}{store}workflows:\n- name: a\n  clusters: [prod]\n"))
            .contains("workflows[0].clusters"));
        assert!(refused("cluster: {name: dev}\naccessRequests: {cluster: dev, signingKeyFile: k}\n")
            .contains("has no upstream"));
        assert!(refused(&format!("{upstream}accessRequests: {{cluster: prod, signingKeyFile: k}}\n"))
            .contains("not one of the clusters"));
        assert!(refused("apiListen: 0.0.0.0:9003\n").contains("apiListen: 0.0.0.0:9003 is not a loopback address"));
        assert!(refused(&format!("{upstream}{store}workflows:\n- name: a\n  approver: {{}}\n"))
            .contains("unknown field `approver`"));
    }

    #[test]
    fn applies_defaults() {
        let c = parse("issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n");
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen.port(), 9001);
        let i = &c.issuers[0];
        assert_eq!(
            (i.username_claim.as_str(), i.groups_claim.as_str(), i.uid_claim.as_str()),
            ("email", "groups", "sub")
        );
        assert_eq!(i.clock_skew(), Duration::from_secs(60));
    }

    #[test]
    fn refuses_unknown_fields_with_file_and_line() {
        let err = parse("issuers:\n- url: https://idp.example.com\n  audiences: [kubegate]\n  audience: typo\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("/etc/kubegate/authz.yaml: "), "{err}");
        assert!(err.contains("unknown field `audience`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn one_issuer_may_serve_people_and_bots_with_disjoint_audiences() {
        let c = parse("issuers:\n- url: https://idp\n  audiences: [kubegate]\n- url: https://idp\n  audiences: [kubegate-bots]\n  usernameClaim: sub\n  usernamePrefix: 'bot:'\n  groupsPrefix: 'bot:'\n");
        assert!(c.is_ok(), "{:?}", c.err().map(|e| e.to_string()));
    }

    /// Attack: two issuers (or two entries of one) with the same user-name prefix, none
    /// at all included: a user of the one can be given the name of a user of the other
    /// (`alice@example.com` at a less careful IdP), and likewise for groups.
    #[test]
    fn issuers_sharing_a_username_or_groups_prefix_are_refused_unless_both_say_so() {
        let two = |a: &str, b: &str| {
            format!("issuers:\n- url: https://a\n  audiences: [k]\n{a}- url: https://b\n  audiences: [k]\n{b}")
        };
        for (a, b, field) in [
            ("", "", "usernamePrefix"),
            ("  usernamePrefix: 'x:'\n", "  usernamePrefix: 'x:'\n  groupsPrefix: 'y:'\n", "usernamePrefix"),
            ("  usernamePrefix: 'a:'\n", "  usernamePrefix: 'b:'\n", "groupsPrefix"),
            ("  usernamePrefix: 'a:'\n  allowSharedGroups: true\n", "  usernamePrefix: 'b:'\n", "groupsPrefix"),
            ("  allowSharedUsernames: true\n  groupsPrefix: 'a:'\n", "  groupsPrefix: 'b:'\n", "usernamePrefix"),
        ] {
            let err = parse(&two(a, b)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("the same {field}")), "{a}{b}: {err}");
            assert!(err.contains("issuers[0] (https://a) and issuers[1] (https://b)"), "{err}");
            assert!(err.contains("give each entry its own") && err.contains(": true` on both entries"), "{err}");
        }
        for (a, b) in [
            ("  usernamePrefix: 'a:'\n  groupsPrefix: 'a:'\n", "  usernamePrefix: 'b:'\n  groupsPrefix: 'b:'\n"),
            // A prefix that extends another is distinct here; its names are guarded per token.
            ("", "  usernamePrefix: 'bot:'\n  groupsPrefix: 'bot:'\n"),
            (
                "  allowSharedUsernames: true\n  allowSharedGroups: true\n",
                "  allowSharedUsernames: true\n  allowSharedGroups: true\n",
            ),
        ] {
            let c = parse(&two(a, b));
            assert!(c.is_ok(), "{a}{b}: {:?}", c.err().map(|e| e.to_string()));
        }
    }

    /// Attack: a role named `System:Masters` or `sys.tem:masters` is impersonated as the
    /// group `system:masters` once `includeRoleNames` lower-cases it and drops periods.
    #[test]
    fn role_names_that_become_reserved_groups_are_refused() {
        for name in ["System:Masters", "sys.tem:masters", "SYSTEM:NODES", "system.:masters", "'\tsystem:masters'"] {
            let text = format!("issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: {name}\n");
            let err = parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("roles[0].name: role"), "{name}: {err}");
        }
        let err = parse("issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: sys.tem:masters\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("\"sys.tem:masters\"") && err.contains("\"system:masters\"") && err.contains("rename"),
            "{err}"
        );
        assert!(parse("issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: System Admins\n").is_ok());
    }

    /// Attack: a privilege level `" system:masters"` (or with a tab) passes a plain
    /// `starts_with("system:")` test and reaches the API server trimmed.
    #[test]
    fn padded_or_reserved_privilege_levels_are_refused() {
        for level in ["system:masters", "' system:masters'", "\"\\tsystem:masters\"", "'ops '", "\"o\\u0000ps\""] {
            let text = format!(
                "issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: r\n  privilegeLevels: [{level}]\n"
            );
            let err = parse(&text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("roles[0].privilegeLevels") && err.contains("of role \"r\""), "{level}: {err}");
        }
        let err = parse("issuers:\n- url: https://idp\n  audiences: [k]\n  groupsPrefix: ' system:'\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn colliding_role_names_are_refused_with_both_names() {
        let err = parse("issuers:\n- url: https://idp\n  audiences: [k]\nroles:\n- name: My.Role\n- name: myrole\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("\"My.Role\"") && err.contains("\"myrole\""), "{err}");
        assert_eq!(role_group_name("Site Reliability.Team"), "site-reliabilityteam");
    }

    #[test]
    fn the_single_cluster_form_is_one_clusters_entry() {
        let c = parse(
            "issuers:\n- url: https://idp\n  audiences: [k]\ncluster: {name: kubernetes, includeIdpGroups: true}\n",
        );
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.clusters.len(), 1);
        assert_eq!((c.clusters[0].name.as_str(), c.clusters[0].include_idp_groups), ("kubernetes", true));
        let c = parse("issuers:\n- url: https://idp\n  audiences: [k]\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.clusters[0].name, "default", "no cluster configured at all: one called default");
    }

    #[test]
    fn clusters_are_named_plainly_once_and_hosts_select_one() {
        let base = "issuers:\n- url: https://idp\n  audiences: [k]\n";
        for (clusters, expected) in [
            ("cluster: {name: a}\nclusters: [{name: b}]\n", "both set"),
            ("clusters: [{name: Prod}]\n", "not a DNS label"),
            ("clusters: [{name: 'pr od'}]\n", "not a DNS label"),
            ("clusters: [{name: -prod}]\n", "not a DNS label"),
            ("clusters: [{name: prod}, {name: prod}]\n", "configured twice"),
            (
                "clusters: [{name: a, hosts: [x.example.com]}, {name: b, hosts: [X.example.com.]}]\n",
                "already selects cluster \"a\"",
            ),
            ("clusters: [{name: a, hosts: ['https://x.example.com']}]\n", "not a host name"),
            ("clusters: [{name: a, hosts: ['x.example.com:443']}]\n", "not a host name"),
            (
                "clusters: [{name: a}]\nroles: [{name: r, clusters: [b]}]\n",
                "names cluster \"b\", which is not configured",
            ),
            ("clusters: [{name: a, tags: {'': x}}]\n", "tags"),
            ("clusters: [{name: a, upstream: {}}]\n", "upstream.server: required unless inCluster"),
            ("clusters: [{name: a, upstream: {server: 'http://k'}}]\n", "must be https"),
            (
                "clusters: [{name: a, upstream: {server: 'https://rancher.example.com/k8s/clusters/c-1'}}]\n",
                "has a path",
            ),
            ("clusters: [{name: a, upstream: {inCluster: true, clientCertFile: c}}]\n", "go together"),
            ("clusters: [{name: a, upstream: {inCluster: true, healthCheck: {intervalSeconds: 0}}}]\n", "at least 1"),
        ] {
            let err = parse(&format!("{base}{clusters}")).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{clusters}: {err}");
        }
        let ok = parse(&format!("{base}clusters: [{{name: dev, hosts: [dev.example.com]}}, {{name: prod, tags: {{env: prod}}}}]\nroles: [{{name: r, clusters: [dev]}}]\n"));
        assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    }

    /// docs/configuration.md's example of three clusters (in-cluster, token, client
    /// certificate) is a configuration that loads, as documented.
    #[test]
    fn the_documented_three_cluster_example_loads() {
        let doc = include_str!("../../docs/configuration.md");
        let example = doc
            .split("```yaml\n")
            .find(|block| block.starts_with("clusters:\n- name: dev"))
            .and_then(|block| block.split("```").next())
            .unwrap_or_default();
        let text = format!("issuers:\n- url: https://idp\n  audiences: [k]\n{example}");
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["dev", "prod", "legacy"]);
        let upstreams: Vec<_> = c.clusters.iter().filter_map(|c| c.upstream.as_ref()).collect();
        assert_eq!(upstreams.len(), 3);
        assert!(upstreams[0].in_cluster && upstreams[1].token_file().is_some());
        assert!(upstreams[2].client_cert_file.is_some() && upstreams[2].token_file().is_none());
    }

    #[test]
    fn hosts_are_normalised_as_they_are_compared() {
        assert_eq!(normal_host("Prod.Example.COM:8443").as_deref(), Some("prod.example.com"));
        assert_eq!(normal_host("prod.example.com.").as_deref(), Some("prod.example.com"));
        assert_eq!(normal_host("[::1]:8443").as_deref(), Some("[::1]"));
        assert_eq!(normal_host("10.0.0.1").as_deref(), Some("10.0.0.1"));
        for bad in ["", "a b", "a..b", "x/y", "user@host"] {
            assert_eq!(normal_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_impossible_settings() {
        for (text, expected) in [
            ("issuers: []\n", "at least one issuer"),
            ("issuers:\n- url: http://idp\n  audiences: [k]\n", "must be https"),
            ("issuers:\n- url: https://idp\n  audiences: []\n", "audiences"),
            ("issuers:\n- url: https://idp\n  audiences: [k]\n  algorithms: [HS256]\n", "shared-secret"),
            ("issuers:\n- url: https://idp\n  audiences: [k]\n  algorithms: [none]\n", "unsigned"),
            ("issuers:\n- url: https://idp\n  audiences: [k]\n  usernamePrefix: 'system:'\n", "reserved"),
            ("issuers:\n- url: https://idp\n  audiences: [k]\n- url: https://idp\n  audiences: [j, k]\n", "twice"),
        ] {
            let err = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
