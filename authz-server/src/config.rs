//! authz-server's configuration file (YAML). Unknown fields are errors, and every error
//! names the file and, where serde can tell, the line and column.

use serde::Deserialize;
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
    /// The OpenID Connect issuers whose tokens are accepted. At least one.
    pub issuers: Vec<IssuerConfig>,
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
    /// Claim holding the Kubernetes user name. Default `email`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Claim holding the user's IdP groups (a string or a list). Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim sent as `Impersonate-Uid`. Default `sub`.
    #[serde(default = "default_uid_claim")]
    pub uid_claim: String,
    /// PEM bundle trusted for the issuer's TLS, in addition to nothing else. When
    /// unset, the system's web PKI roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allowed clock skew for `exp` and `nbf`, in seconds. Default 60.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
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
        Self::parse(&text, path)
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
        }
        Ok(())
    }
}

impl IssuerConfig {
    /// The allowed clock skew.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_seconds)
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
    fn refuses_impossible_settings() {
        for (text, expected) in [
            ("issuers: []\n", "at least one issuer"),
            ("issuers:\n- url: http://idp\n  audiences: [k]\n", "must be https"),
            ("issuers:\n- url: https://idp\n  audiences: []\n", "audiences"),
        ] {
            let err = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
