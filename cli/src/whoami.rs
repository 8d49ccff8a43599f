//! `kubegate whoami`: asks the gateway (`GET /kubegate/v1/whoami`) through kubectl, so
//! the answer uses exactly the kubeconfig context, credential and `as-groups` kubectl
//! would, and prints it for a person.

use crate::gateway_api::{Gateway, KubeContext};
use serde::Deserialize;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The path authz-server answers.
pub const WHOAMI_PATH: &str = "/kubegate/v1/whoami";

/// The clusters the gateway would let the caller reach (`GET /kubegate/v1/clusters`).
pub const CLUSTERS_PATH: &str = "/kubegate/v1/clusters";

/// The gateway's cluster list (unknown fields ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterList {
    /// Requests must name a cluster: one context per cluster.
    #[serde(default)]
    pub names_required: bool,
    #[serde(default)]
    pub clusters: Vec<ReachableCluster>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReachableCluster {
    pub name: String,
}

/// What the gateway says about the caller (unknown fields ignored: a newer gateway may
/// say more).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub username: String,
    #[serde(default)]
    pub idp_groups: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub privilege_levels: Vec<String>,
    #[serde(default)]
    pub kubernetes: Option<KubernetesIdentity>,
    pub token_expires_at: String,
    /// Access grants in force on this cluster, whose levels are among the above.
    #[serde(default)]
    pub grants: Vec<ActiveGrant>,
}

/// An access grant, as whoami reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveGrant {
    pub id: String,
    #[serde(default)]
    pub levels: Vec<String>,
    pub expires_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KubernetesIdentity {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Which kubectl and kubeconfig context to ask through.
pub struct Kubectl<'a> {
    pub kubeconfig: Option<&'a Path>,
    pub context: Option<&'a str>,
    /// Narrow to these privilege levels (`--as <you> --as-group ...`), as a context made
    /// with `kubeconfig add --privilege` does.
    pub as_groups: &'a [String],
}

impl Kubectl<'_> {
    /// `kubectl get --raw /kubegate/v1/whoami`: the raw JSON. kubectl's stderr (a login
    /// prompt, an error) goes straight to ours.
    ///
    /// With `as_groups`, kubectl needs `--as`, so the caller's own name is asked first:
    /// the gateway refuses a narrowing to a level you do not hold with its own message,
    /// which kubectl prints here (`kubectl auth whoami` hides it behind a generic
    /// "selfsubjectreviews API is not enabled").
    pub fn whoami_json(&self) -> anyhow::Result<String> {
        self.get_raw(WHOAMI_PATH, "who you are")
    }

    /// The clusters this gateway would let the caller reach.
    pub fn clusters(&self) -> anyhow::Result<ClusterList> {
        let json = self.get_raw(CLUSTERS_PATH, "which clusters you may reach")?;
        let list: ClusterList = serde_json::from_str(&json)
            .map_err(|e| anyhow::anyhow!("the server did not answer like a kubegate gateway ({e})"))?;
        Ok(list)
    }

    /// `kubectl get --raw PATH` as this context, narrowed as asked; `what` names the
    /// question in errors. PATH is per cluster: it goes under the server URL's path
    /// (`/clusters/prod/kubegate/v1/whoami`).
    fn get_raw(&self, path: &str, what: &str) -> anyhow::Result<String> {
        let narrowing = match self.as_groups {
            [] => Vec::new(),
            groups => {
                let plain = Kubectl { as_groups: &[], ..*self }.whoami()?;
                let mut args = vec!["--as".to_owned(), plain.username];
                args.extend(groups.iter().flat_map(|g| ["--as-group".to_owned(), g.clone()]));
                args
            }
        };
        let gateway = Gateway::open(KubeContext { kubeconfig: self.kubeconfig, context: self.context })?;
        let raw = format!("{}{path}", gateway.server().path());
        gateway.get_raw(&raw, &narrowing, what)
    }

    pub fn whoami(&self) -> anyhow::Result<WhoAmI> {
        let json = self.whoami_json()?;
        serde_json::from_str(&json).map_err(|e| {
            anyhow::anyhow!(
                "the server did not answer like a kubegate gateway ({e}); is this context's server kubegate?"
            )
        })
    }
}

/// The answer, for a person.
pub fn describe(whoami: &WhoAmI) -> String {
    let list = |items: &[String]| if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
    let sees = match &whoami.kubernetes {
        Some(k) => format!("{} in groups {}", k.user, list(&k.groups)),
        None => "the gateway's own identity (no impersonation on this cluster)".into(),
    };
    let grants: String = whoami
        .grants
        .iter()
        .map(|g| {
            format!(
                "Access grant:      {} ({}) until {}{}\n",
                g.id,
                list(&g.levels),
                g.expires_at,
                remaining(&g.expires_at)
            )
        })
        .collect();
    format!(
        "User:              {}\nIdP groups:        {}\nRoles:             {}\nPrivilege levels:  {}\n{grants}\
         Kubernetes sees:   {sees}\nToken expires:     {}{}\n",
        whoami.username,
        list(&whoami.idp_groups),
        list(&whoami.roles),
        list(&whoami.privilege_levels),
        whoami.token_expires_at,
        remaining(&whoami.token_expires_at),
    )
}

fn remaining(expires_at: &str) -> String {
    let Ok(expiry) = humantime::parse_rfc3339(expires_at) else { return String::new() };
    match expiry.duration_since(SystemTime::now()) {
        Ok(left) => format!(" (in {})", humantime::format_duration(Duration::from_secs(left.as_secs()))),
        Err(_) => " (expired)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_levels_and_what_kubernetes_sees() {
        let whoami: WhoAmI = serde_json::from_str(
            r#"{"apiVersion":"kubegate.dev/v1","kind":"WhoAmI","username":"alice","idpGroups":["eng"],
                "roles":[],"privilegeLevels":["viewers"],"kubernetes":{"user":"alice","groups":["viewers"]},
                "tokenExpiresAt":"2000-01-01T00:00:00Z","futureField":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = describe(&whoami);
        assert!(text.contains("Privilege levels:  viewers"), "{text}");
        assert!(text.contains("Roles:             (none)"), "{text}");
        assert!(text.contains("alice in groups viewers"), "{text}");
        assert!(text.contains("(expired)"), "{text}");
        assert!(!text.contains("Access grant"), "{text}");
    }

    #[test]
    fn shows_each_access_grant_and_when_it_ends() {
        let whoami: WhoAmI = serde_json::from_str(
            r#"{"username":"alice","privilegeLevels":["oncall"],"tokenExpiresAt":"2000-01-01T00:00:00Z",
                "grants":[{"id":"ar-7c3f1","levels":["oncall"],"expiresAt":"2000-01-01T01:00:00Z"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = describe(&whoami);
        assert!(text.contains("Access grant:      ar-7c3f1 (oncall) until 2000-01-01T01:00:00Z (expired)"), "{text}");
    }
}
