//! Which cluster a request is for. Three things can name one: the TLS server name the
//! client connected with, the `:authority` host, and a `/clusters/<name>` path prefix
//! (kubectl accepts a server URL with a path). Every one that names a cluster must name
//! the same cluster, or the request is refused: a connection opened for `dev` carrying a
//! request for `prod` is exactly the confusion an attacker would try, and whatever the
//! gateway picked, some other hop might read the request the other way.
//!
//! The prefix must be written plainly: `/clusters/pr%6Fd/` is refused rather than decoded
//! (Envoy and the API server would each have their own idea of it), and a path that
//! still reads as a cluster prefix once decoded (`/cluster%73/prod/...`,
//! `/clusters/dev/clusters/prod/...`) is refused by [`refuse_prefix_in_path`].
//!
//! The selection is the decision's `cluster`, and Envoy routes by the decision, so what
//! was decided for one cluster cannot run on another.

use crate::config::{normal_host, ClusterConfig};
use std::collections::HashMap;

/// The literal prefix that names a cluster in a request path.
pub const PATH_PREFIX: &str = "/clusters/";

/// The clusters, by name and by host.
#[derive(Debug, Clone)]
pub struct ClusterSelector {
    names: Vec<String>,
    hosts: HashMap<String, usize>,
}

/// The cluster a request is for, and its target with the prefix removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Index into the configured clusters.
    pub index: usize,
    /// The request target (path and query) as the cluster's API server gets it.
    pub target: String,
}

/// Why no cluster could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("there is no cluster {0:?} behind this gateway")]
    Unknown(String),
    #[error(
        "this gateway serves several clusters and the request names none: use a server URL such as \
         https://<gateway>/clusters/<name> (`kubegate kubeconfig add` writes one context per cluster)"
    )]
    NoneNamed,
    #[error("the request names two clusters: {first} by its {first_by}, {second} by its {second_by}")]
    Conflicting { first: String, first_by: &'static str, second: String, second_by: &'static str },
    #[error("the cluster prefix in the path must be written plainly, as /clusters/<name>/ (got {0:?})")]
    EncodedPrefix(String),
    #[error("the path {0:?} reads as a cluster prefix once decoded; name the cluster plainly, once")]
    PrefixInPath(String),
}

impl SelectionError {
    /// The HTTP status: 404 for a cluster that is not there, 421 (Misdirected Request)
    /// for one the connection was not made for, 400 for an unreadable prefix.
    pub fn http_status(&self) -> u16 {
        match self {
            SelectionError::Unknown(_) | SelectionError::NoneNamed => 404,
            SelectionError::Conflicting { .. } => 421,
            SelectionError::EncodedPrefix(_) | SelectionError::PrefixInPath(_) => 400,
        }
    }
}

impl ClusterSelector {
    /// Built from validated configuration (names unique, hosts normalised and unique).
    pub fn new(clusters: &[ClusterConfig]) -> Self {
        let names = clusters.iter().map(|c| c.name.clone()).collect();
        let hosts = clusters
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.hosts.iter().filter_map(move |h| Some((normal_host(h)?, i))))
            .collect();
        Self { names, hosts }
    }

    /// The cluster a request is for. `sni` and `authority` may be empty (no TLS server
    /// name, an HTTP/1.0 request without `Host`).
    pub fn select(&self, sni: &str, authority: &str, target: &str) -> Result<Selection, SelectionError> {
        let by_host = |host: &str| normal_host(host).and_then(|h| self.hosts.get(&h).copied());
        let (prefixed, target) = self.strip_prefix(target)?;
        let named =
            [(by_host(sni), "TLS server name"), (by_host(authority), "host (:authority)"), (prefixed, "path prefix")];
        let mut chosen: Option<(usize, &'static str)> = None;
        for (index, by) in named.into_iter().filter_map(|(index, by)| Some((index?, by))) {
            match chosen {
                Some((first, first_by)) if first != index => {
                    return Err(SelectionError::Conflicting {
                        first: self.name(first).to_owned(),
                        first_by,
                        second: self.name(index).to_owned(),
                        second_by: by,
                    })
                }
                Some(_) => {}
                None => chosen = Some((index, by)),
            }
        }
        let index = match (chosen, self.names.len()) {
            (Some((index, _)), _) => index,
            (None, 1) => 0,
            (None, _) => return Err(SelectionError::NoneNamed),
        };
        Ok(Selection { index, target })
    }

    fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// The cluster the path prefix names, if it has one, and the target without it
    /// (`/clusters/prod` alone is `/`).
    fn strip_prefix(&self, target: &str) -> Result<(Option<usize>, String), SelectionError> {
        let Some(rest) = target.strip_prefix(PATH_PREFIX) else { return Ok((None, target.to_owned())) };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if name.contains('%') {
            return Err(SelectionError::EncodedPrefix(format!("{PATH_PREFIX}{name}")));
        }
        let index =
            self.names.iter().position(|n| n == name).ok_or_else(|| SelectionError::Unknown(name.to_owned()))?;
        let target = if after.starts_with('/') { after.to_owned() } else { format!("/{after}") };
        Ok((Some(index), target))
    }
}

/// Refuses a decoded path that would still read as a cluster prefix: no Kubernetes path
/// starts with `/clusters`, so such a path is an attempt to make two readers disagree.
pub fn refuse_prefix_in_path(decoded_path: &str) -> Result<(), SelectionError> {
    let trimmed = PATH_PREFIX.trim_end_matches('/');
    if decoded_path == trimmed || decoded_path.starts_with(PATH_PREFIX) {
        return Err(SelectionError::PrefixInPath(decoded_path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(clusters: &[(&str, &[&str])]) -> ClusterSelector {
        let configs: Vec<ClusterConfig> = clusters
            .iter()
            .map(|(name, hosts)| ClusterConfig {
                name: (*name).to_owned(),
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                ..ClusterConfig::default()
            })
            .collect();
        ClusterSelector::new(&configs)
    }

    fn two() -> ClusterSelector {
        selector(&[("dev", &["dev.kubegate.example.com"]), ("prod", &["prod.kubegate.example.com"])])
    }

    fn picked(s: &ClusterSelector, sni: &str, authority: &str, target: &str) -> Result<(usize, String), u16> {
        s.select(sni, authority, target).map(|s| (s.index, s.target)).map_err(|e| e.http_status())
    }

    #[test]
    fn a_single_cluster_needs_no_name() {
        let one = selector(&[("default", &[])]);
        assert_eq!(picked(&one, "", "gw:8443", "/api/v1/pods"), Ok((0, "/api/v1/pods".into())));
        assert_eq!(picked(&one, "", "", "/clusters/default/api?x=1"), Ok((0, "/api?x=1".into())));
        assert_eq!(picked(&one, "", "", "/clusters/prod/api"), Err(404));
    }

    #[test]
    fn hosts_are_compared_without_case_port_or_trailing_dot() {
        let s = two();
        for authority in ["prod.kubegate.example.com", "PROD.Kubegate.example.com:443", "prod.kubegate.example.com."] {
            assert_eq!(picked(&s, "", authority, "/api"), Ok((1, "/api".into())), "{authority}");
        }
        assert_eq!(picked(&s, "dev.kubegate.example.com", "10.0.0.1:443", "/api"), Ok((0, "/api".into())));
        assert_eq!(picked(&s, "", "kubegate.example.com", "/api"), Err(404), "several clusters, none named");
    }

    #[test]
    fn the_path_prefix_names_a_cluster_and_is_removed() {
        let s = two();
        assert_eq!(picked(&s, "", "gw", "/clusters/prod/api/v1/pods?watch=1"), Ok((1, "/api/v1/pods?watch=1".into())));
        assert_eq!(picked(&s, "", "gw", "/clusters/prod"), Ok((1, "/".into())));
        assert_eq!(picked(&s, "", "gw", "/clusters/prod?timeout=32s"), Ok((1, "/?timeout=32s".into())));
        assert_eq!(picked(&s, "", "prod.kubegate.example.com", "/clusters/prod/api"), Ok((1, "/api".into())));
        assert_eq!(picked(&s, "", "gw", "/clusters/PROD/api"), Err(404), "names are lower case");
        assert_eq!(picked(&s, "", "gw", "/clusters//api"), Err(404));
    }

    /// Attack: a request for one cluster on a connection or host of another, hoping one
    /// hop routes by the host and another decides by the path (or the reverse).
    #[test]
    fn sources_that_disagree_are_refused_as_misdirected() {
        let s = two();
        let refused = s.select("dev.kubegate.example.com", "prod.kubegate.example.com", "/api");
        assert_eq!(refused.as_ref().map_err(SelectionError::http_status), Err(421));
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("dev by its TLS server name, prod by its host"), "{message}");
        assert_eq!(picked(&s, "", "dev.kubegate.example.com", "/clusters/prod/api"), Err(421));
        assert_eq!(picked(&s, "prod.kubegate.example.com", "gw", "/clusters/dev/api"), Err(421));
    }

    /// Attack: an encoded prefix that one reader decodes and another does not.
    #[test]
    fn an_encoded_prefix_is_refused() {
        let s = two();
        for target in ["/clusters/pr%6Fd/api", "/clusters/%70rod/api", "/clusters/prod%2Fx/api"] {
            assert_eq!(picked(&s, "", "gw", target), Err(400), "{target}");
        }
        for path in ["/clusters/prod/api", "/clusters", "/clusters/"] {
            assert!(refuse_prefix_in_path(path).is_err(), "{path}");
        }
        for path in ["/api", "/clustersx", "/Clusters/prod"] {
            assert!(refuse_prefix_in_path(path).is_ok(), "{path}");
        }
    }
}
