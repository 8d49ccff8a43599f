//! authz-server's configuration file (YAML). Unknown fields are errors, and every error
//! names the file and, where serde can tell, the line and column.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Address of the gRPC ext_authz and health service. Default `127.0.0.1:9001`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prometheus metrics at `/metrics` on this address; off when unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
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
    /// The cluster behind this gateway and how identities reach it.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Standing roles: who holds which privilege levels.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Cedar policy files, or directories of `*.cedar` files, relative to this file.
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
}

/// The cluster behind this gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// The cluster's name: the `k8s::Cluster` entity policies refer to. Default `default`.
    #[serde(default = "default_cluster_name")]
    pub name: String,
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
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            name: default_cluster_name(),
            identity_mode: IdentityMode::default(),
            include_idp_groups: false,
            include_role_names: false,
            gateway_user: default_gateway_user(),
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
    /// The Kubernetes groups members get on this cluster.
    #[serde(default)]
    pub privilege_levels: Vec<String>,
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
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The YAML does not parse or does not match the schema; serde's message carries
    /// the line and column.
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    /// The file parses but says something impossible.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Reads and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::parse(&text, path)?;
        // Policy paths are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        config.policy_files = config.policy_files.iter().map(|p| base.join(p)).collect();
        Ok(config)
    }

    /// Every policy file: the listed files, and the `*.cedar` files of listed
    /// directories, in name order.
    pub fn policy_paths(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut paths = Vec::new();
        for entry in &self.policy_files {
            if entry.is_dir() {
                let listing =
                    std::fs::read_dir(entry).map_err(|source| ConfigError::Read { path: entry.clone(), source })?;
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
        let config: Config =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        config.validate().map_err(|reason| ConfigError::Invalid { path: path.to_owned(), reason })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.issuers.is_empty() {
            return Err("issuers: at least one issuer is required".into());
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
                if prefix.starts_with("system:") && !issuer.allow_reserved_names {
                    return Err(format!("issuers[{i}].{field}: {prefix:?} would produce reserved `system:` names"));
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
            if role.privilege_levels.iter().any(|l| l.starts_with("system:")) {
                return Err(format!("roles[{i}].privilegeLevels: `system:` groups cannot be privilege levels"));
            }
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
        let c = parse("issuers:\n- url: https://idp\n  audiences: [kubegate]\n- url: https://idp\n  audiences: [kubegate-bots]\n  usernameClaim: sub\n");
        assert!(c.is_ok(), "{:?}", c.err().map(|e| e.to_string()));
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
