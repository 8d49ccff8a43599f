//! Calls to the gateway's own HTTP API (`/kubegate/v1/...`) through kubectl, so each one
//! carries exactly the kubeconfig context's credential (kubegate's exec plugin, which
//! may log the user in), CA, TLS server name and proxy, with no second HTTP client to
//! keep in step with kubectl.
//!
//! Which path a `--raw` request reaches depends on kubectl's version: up to 1.33 the
//! raw path replaces the server URL's path (`https://gw/clusters/dev` + `/x` is
//! `https://gw/x`), from 1.34 it is appended to it (`https://gw/clusters/dev/x`;
//! kubernetes/kubernetes#131165). So every call here runs kubectl with `--server` set
//! to the URL's origin and gives the whole path itself: the same request on every
//! kubectl. `--server` makes kubectl forget the context's `tls-server-name`, so that
//! is passed again.
//!
//! POST bodies go in a temporary file (`create --raw PATH -f FILE`), not on stdin: with
//! `-f -` kubectl tells the exec plugin it may not interact, and an expired session
//! could then not log in again; with a file, kubectl's stdin stays the terminal.

use serde::Deserialize;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Which kubeconfig and context kubectl uses (`None`: kubectl's defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct KubeContext<'a> {
    pub kubeconfig: Option<&'a Path>,
    pub context: Option<&'a str>,
}

/// Where the context's server URL points, split the way the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `https://gw:8443`: what kubectl is told with `--server`.
    origin: String,
    /// The URL's path without a trailing `/` (`/clusters/dev`, or empty).
    path: String,
    /// The context's `tls-server-name`, if it has one.
    tls_server_name: Option<String>,
}

impl Server {
    pub fn parse(server: &str, tls_server_name: Option<String>) -> anyhow::Result<Self> {
        let url = url::Url::parse(server).map_err(|e| anyhow::anyhow!("this context's server {server:?}: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "https" | "http") && url.host().is_some(),
            "this context's server {server:?} is not an http(s) URL"
        );
        Ok(Self {
            origin: url.origin().ascii_serialization(),
            path: url.path().trim_end_matches('/').to_owned(),
            tls_server_name: tls_server_name.filter(|name| !name.is_empty()),
        })
    }

    /// The server URL's path (`/clusters/dev`): per-cluster calls such as whoami go under it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cluster the URL names with a `/clusters/<name>` suffix (how `kubegate
    /// kubeconfig add` writes a context per cluster), if it does.
    pub fn cluster(&self) -> Option<&str> {
        self.split_cluster().map(|(_, cluster)| cluster)
    }

    /// The path of the gateway itself: the URL's path without `/clusters/<name>`. The
    /// access API lives there, for all clusters at once.
    pub fn gateway_path(&self) -> &str {
        self.split_cluster().map_or(self.path.as_str(), |(root, _)| root)
    }

    fn split_cluster(&self) -> Option<(&str, &str)> {
        let (rest, name) = self.path.rsplit_once('/')?;
        let root = rest.strip_suffix("/clusters")?;
        (!name.is_empty()).then_some((root, name))
    }
}

/// A context's gateway, with its server read once (`kubectl config view`).
pub struct Gateway<'a> {
    context: KubeContext<'a>,
    server: Server,
}

/// What `kubectl config view --minify -o json` says about the context's cluster.
#[derive(Deserialize)]
struct MinifiedConfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterFields,
}

#[derive(Deserialize)]
struct ClusterFields {
    server: String,
    #[serde(default, rename = "tls-server-name")]
    tls_server_name: Option<String>,
}

impl<'a> Gateway<'a> {
    /// Reads the context's server; kubectl's own complaint (no such context) goes to
    /// stderr.
    pub fn open(context: KubeContext<'a>) -> anyhow::Result<Self> {
        let mut command = kubectl(context);
        command.args(["config", "view", "--minify", "-o", "json"]).stdin(Stdio::null());
        let json = run(command, "kubectl could not read this context's server (see above)")?;
        let config: MinifiedConfig = serde_json::from_str(&json)
            .map_err(|e| anyhow::anyhow!("kubectl config view printed what kubegate cannot read ({e})"))?;
        let cluster = config
            .clusters
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("this kubeconfig context has no cluster"))?
            .cluster;
        Ok(Self { context, server: Server::parse(&cluster.server, cluster.tls_server_name)? })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// `kubectl get --raw PATH`, PATH from the server's origin; `extra` are global
    /// flags (`--as`); `what` ends "kubectl could not ask the gateway ..." on failure.
    /// stdin stays ours, so the exec plugin can log the user in.
    pub fn get_raw(&self, path: &str, extra: &[String], what: &str) -> anyhow::Result<String> {
        let mut command = self.kubectl();
        command.args(extra).args(["get", "--raw", path]).stdin(Stdio::inherit());
        run(command, &format!("kubectl could not ask the gateway {what} (see above)"))
    }

    /// `kubectl create --raw PATH -f FILE`: POSTs `body`, answers what the gateway said.
    pub fn create_raw(&self, path: &str, body: &[u8], what: &str) -> anyhow::Result<String> {
        let mut file = tempfile::Builder::new().prefix("kubegate-").suffix(".json").tempfile()?;
        file.write_all(body)?;
        file.flush()?;
        let mut command = self.kubectl();
        command.args(["create", "--raw", path, "-f"]).arg(file.path()).stdin(Stdio::inherit());
        run(command, &format!("kubectl could not ask the gateway {what} (see above)"))
    }

    /// kubectl on this context, pointed at the server's origin.
    fn kubectl(&self) -> Command {
        let mut command = kubectl(self.context);
        command.args(["--server", &self.server.origin]);
        if let Some(name) = &self.server.tls_server_name {
            command.args(["--tls-server-name", name]);
        }
        command
    }
}

/// The kubectl to run: `KUBEGATE_KUBECTL`, else `kubectl` on PATH.
fn kubectl_program() -> std::ffi::OsString {
    std::env::var_os("KUBEGATE_KUBECTL").unwrap_or_else(|| "kubectl".into())
}

/// kubectl with the context's kubeconfig and context flags.
fn kubectl(context: KubeContext<'_>) -> Command {
    let mut command = Command::new(kubectl_program());
    if let Some(path) = context.kubeconfig {
        command.arg("--kubeconfig").arg(path);
    }
    if let Some(name) = context.context {
        command.args(["--context", name]);
    }
    command
}

/// Runs `command`, its stderr straight to ours (kubectl's message, the gateway's
/// `Status`, a login prompt); stdout is the answer. `failed` is the error when kubectl
/// exits non-zero.
fn run(mut command: Command, failed: &str) -> anyhow::Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", kubectl_program().to_string_lossy()))?;
    anyhow::ensure!(output.status.success(), "{failed}");
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Server {
        Server::parse(url, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_per_cluster_url_names_its_cluster_and_the_gateway_root() {
        let dev = server("https://gw.example.com:8443/clusters/dev/");
        assert_eq!(dev.origin, "https://gw.example.com:8443");
        assert_eq!(dev.path(), "/clusters/dev");
        assert_eq!(dev.cluster(), Some("dev"));
        assert_eq!(dev.gateway_path(), "");
        let behind_proxy = server("https://proxy.example.com/k8s/clusters/prod");
        assert_eq!((behind_proxy.cluster(), behind_proxy.gateway_path()), (Some("prod"), "/k8s"));
    }

    #[test]
    fn a_plain_url_names_no_cluster() {
        for url in ["https://gw.example.com", "https://gw.example.com/", "https://gw/clusters", "https://gw/x/dev"] {
            let plain = server(url);
            assert_eq!(plain.cluster(), None, "{url}");
            assert_eq!(plain.gateway_path(), plain.path(), "{url}");
        }
        assert_eq!(server("https://[::1]:8443/clusters/dev").origin, "https://[::1]:8443");
    }

    #[test]
    fn an_empty_tls_server_name_is_none_and_odd_servers_are_refused() {
        assert_eq!(Server::parse("https://gw", Some(String::new())).map(|s| s.tls_server_name).ok(), Some(None));
        assert!(Server::parse("unix:/var/run/x", None).is_err());
        assert!(Server::parse("not a url", None).is_err());
    }
}
