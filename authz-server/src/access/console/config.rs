//! `accessRequests.console`: which OAuth client and issuer the console logs people in
//! with, and where it is reached, which decides its redirect URI.
//!
//! The redirect URI is `https://<host>/kubegate/console/callback` for the host the
//! browser asked for, but only when that host is one the configuration names (`url`'s,
//! or one of `hosts`); a request for any other host is sent to the configured `url`
//! first, or refused. So a forged `Host` never makes the console send anyone's login
//! elsewhere.

use serde::Deserialize;

/// Where the console's pages are, below the gateway's origin.
pub const PATH: &str = "/kubegate/console/";
/// The OAuth redirect URI's path.
pub const CALLBACK_PATH: &str = "/kubegate/console/callback";

/// The console, as configured (checked when read).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConsoleConfig")]
pub struct ConsoleConfig {
    /// The OAuth client id people log in with: one of the issuer's `audiences`, a public
    /// client (PKCE, no secret) with the console's redirect URI registered.
    pub client_id: String,
    /// The `issuers[].url` to log in at; `None`: the first issuer.
    pub issuer: Option<String>,
    /// The gateway's origin as people reach it (`https://kubegate.example.com`).
    pub url: Option<Authority>,
    /// Further hosts the console answers under with their own redirect URI.
    pub hosts: Vec<HostRule>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConsoleConfig {
    client_id: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "groups"].map(String::from).to_vec()
}

impl TryFrom<RawConsoleConfig> for ConsoleConfig {
    type Error = String;

    fn try_from(raw: RawConsoleConfig) -> Result<Self, String> {
        let printable = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
        if !printable(&raw.client_id) {
            return Err("accessRequests.console.clientId: an OAuth client id (printable, no spaces) is required".into());
        }
        let url = raw.url.as_deref().map(parse_url).transpose()?;
        let hosts = raw
            .hosts
            .iter()
            .map(|h| {
                HostRule::parse(h).ok_or_else(|| {
                    format!("accessRequests.console.hosts: {h:?} is not a host name or `host:port` (no scheme or path)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if url.is_none() && hosts.is_empty() {
            return Err("accessRequests.console: set `url` (the gateway's https origin people use) or `hosts`: the redirect URI is made from one of them".into());
        }
        if !raw.scopes.iter().any(|s| s == "openid") || !raw.scopes.iter().all(|s| printable(s)) {
            return Err("accessRequests.console.scopes: must include `openid`, each scope without spaces".into());
        }
        Ok(Self { client_id: raw.client_id, issuer: raw.issuer, url, hosts, scopes: raw.scopes })
    }
}

/// `url`: https, an origin only (a path would not be where the console is).
fn parse_url(text: &str) -> Result<Authority, String> {
    let problem = |why: &str| format!("accessRequests.console.url: {text:?} {why}");
    let parsed = url::Url::parse(text).map_err(|e| problem(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(problem("must be https (the session cookie is Secure)"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(problem("may not carry a user name or password"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(problem(
            "must be an origin only (`https://host[:port]`): the console is always at /kubegate/console/",
        ));
    }
    let authority = match (parsed.host_str(), parsed.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(problem("has no host")),
    };
    Authority::parse(&authority).ok_or_else(|| problem("has no usable host"))
}

/// A host and port as the browser names them (`Host`), lower case. A missing port is
/// https's 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    /// `host`, `host:port`, `1.2.3.4:port` or `[v6]:port`; `None` for anything else
    /// (a user name, a path, a second colon, an empty or out-of-range port).
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = match text.strip_prefix('[') {
            Some(v6) => {
                let (address, rest) = v6.split_once(']')?;
                if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                    return None;
                }
                let port = match rest {
                    "" => None,
                    _ => Some(rest.strip_prefix(':')?),
                };
                (format!("[{}]", address.to_ascii_lowercase()), port)
            }
            None => {
                let (host, port) = match text.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (text, None),
                };
                let label_ok = |l: &str| {
                    (1..=63).contains(&l.len())
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                };
                if host.len() > 253 || !host.split('.').all(label_ok) {
                    return None;
                }
                (host.to_ascii_lowercase(), port)
            }
        };
        let port = match port {
            None => 443,
            Some(digits) if !digits.is_empty() && digits.len() <= 5 && digits.chars().all(|c| c.is_ascii_digit()) => {
                digits.parse::<u16>().ok().filter(|p| *p != 0)?
            }
            Some(_) => return None,
        };
        Some(Self { host, port })
    }

    /// `https://host[:port]`, the port left out when it is 443.
    pub fn origin(&self) -> String {
        match self.port {
            443 => format!("https://{}", self.host),
            port => format!("https://{}:{port}", self.host),
        }
    }
}

/// An entry of `hosts`: a host on any port, or on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    port: Option<u16>,
}

impl HostRule {
    fn parse(text: &str) -> Option<Self> {
        let authority = Authority::parse(text)?;
        let has_port = match text.strip_prefix('[') {
            Some(v6) => v6.split_once(']').is_some_and(|(_, rest)| !rest.is_empty()),
            None => text.contains(':'),
        };
        Some(Self { host: authority.host, port: has_port.then_some(authority.port) })
    }

    fn allows(&self, authority: &Authority) -> bool {
        self.host == authority.host && self.port.is_none_or(|p| p == authority.port)
    }
}

/// Where a request for the console should be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Here: the request's host is a configured one; this is its origin.
    Here(String),
    /// Not here: the request's host is none of the configured ones; the configured
    /// origin to send the browser to.
    Elsewhere(String),
    /// Not here, and no configured origin to go to.
    Nowhere,
}

impl ConsoleConfig {
    /// Where a request whose `Host` header is `host` is answered.
    pub fn place(&self, host: Option<&str>) -> Place {
        let asked = host.and_then(Authority::parse);
        if let Some(asked) = asked {
            if self.url.as_ref() == Some(&asked) || self.hosts.iter().any(|rule| rule.allows(&asked)) {
                return Place::Here(asked.origin());
            }
        }
        match &self.url {
            Some(url) => Place::Elsewhere(url.origin()),
            None => Place::Nowhere,
        }
    }

    /// The redirect URI for a console at `origin` (a [`Place::Here`] origin).
    pub fn redirect_uri(origin: &str) -> String {
        format!("{origin}{CALLBACK_PATH}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<ConsoleConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    fn must(yaml: &str) -> ConsoleConfig {
        config(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fields_are_checked_when_read() {
        assert!(config("clientId: kubegate\nurl: https://gw.example.com\n").is_ok());
        assert!(config("clientId: kubegate\nhosts: [gw.example.com, 'gw.example.com:8443']\n").is_ok());
        for (yaml, problem) in [
            ("clientId: kubegate\n", "set `url`"),
            ("clientId: ''\nurl: https://gw\n", "clientId"),
            ("clientId: kubegate\nurl: http://gw.example.com\n", "must be https"),
            ("clientId: kubegate\nurl: https://gw.example.com/console\n", "origin only"),
            ("clientId: kubegate\nurl: https://u:p@gw.example.com\n", "user name"),
            ("clientId: kubegate\nhosts: ['https://gw.example.com']\n", "hosts"),
            ("clientId: kubegate\nhosts: ['gw.example.com/x']\n", "hosts"),
            ("clientId: kubegate\nurl: https://gw\nscopes: [email]\n", "openid"),
            ("clientId: kubegate\nurl: https://gw\nredirect: https://evil\n", "unknown field"),
        ] {
            let error = config(yaml).err().unwrap_or_default();
            assert!(error.contains(problem), "{yaml:?}: {error}");
        }
    }

    #[test]
    fn authorities_parse_strictly() {
        let parsed = |s: &str| Authority::parse(s).map(|a| a.origin());
        assert_eq!(parsed("GW.Example.com"), Some("https://gw.example.com".into()));
        assert_eq!(parsed("gw.example.com:443"), Some("https://gw.example.com".into()));
        assert_eq!(parsed("gw.example.com:8443"), Some("https://gw.example.com:8443".into()));
        assert_eq!(parsed("127.0.0.1:9443"), Some("https://127.0.0.1:9443".into()));
        assert_eq!(parsed("[::1]:9443"), Some("https://[::1]:9443".into()));
        for bad in [
            "",
            "gw.example.com:",
            "gw.example.com:0",
            "gw.example.com:99999",
            "gw.example.com:80:80",
            "user@gw.example.com",
            "gw.example.com/path",
            "gw.example.com.",
            "evil.com#gw.example.com",
            "[::1",
            "[::1]x",
            "gw example.com",
            "-gw.example.com",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad:?}");
        }
    }

    /// Attack: a request with `Host: evil.example` (a proxy that passes any Host, or a
    /// DNS name pointed at the gateway) must not make the console ask the IdP to send
    /// the login to evil.example.
    #[test]
    fn the_redirect_uri_follows_the_host_only_when_it_is_configured() {
        let c = must("clientId: kubegate\nurl: https://gw.example.com\nhosts: [gw.internal, 'alt.example.com:8443']\n");
        assert_eq!(c.place(Some("gw.example.com")), Place::Here("https://gw.example.com".into()));
        assert_eq!(c.place(Some("GW.example.com:443")), Place::Here("https://gw.example.com".into()));
        assert_eq!(c.place(Some("gw.internal:9443")), Place::Here("https://gw.internal:9443".into()), "any port");
        assert_eq!(c.place(Some("alt.example.com:8443")), Place::Here("https://alt.example.com:8443".into()));
        for other in [
            Some("evil.example"),
            Some("alt.example.com"),
            Some("alt.example.com:9443"),
            Some("gw.example.com:8443"),
            Some("gw.example.com.evil.example"),
            Some("gw.example.com@evil.example"),
            Some("evil.example/gw.example.com"),
            None,
        ] {
            assert_eq!(c.place(other), Place::Elsewhere("https://gw.example.com".into()), "{other:?}");
        }
        let hosts_only = must("clientId: kubegate\nhosts: [gw.internal]\n");
        assert_eq!(hosts_only.place(Some("evil.example")), Place::Nowhere);
        assert_eq!(
            ConsoleConfig::redirect_uri("https://gw.internal:9443"),
            "https://gw.internal:9443/kubegate/console/callback"
        );
    }
}
