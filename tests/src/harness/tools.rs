//! Where the real programs are: built workspace binaries next to the test executable,
//! and the installed Envoy, kubectl and OIDC provider (`make tools` puts them in
//! `.tools/` and `tests/oidc-provider/node_modules`). Each can be overridden by an
//! environment variable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Paths of every program a gateway stack runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub envoy: PathBuf,
    /// kubectl 1.33 (the default), checked to be that version.
    pub kubectl: PathBuf,
    /// The oldest and the newest kubectl we test streaming with (1.27, 1.35), each
    /// checked to be that version.
    pub kubectl_oldest: PathBuf,
    pub kubectl_newest: PathBuf,
    pub node: PathBuf,
    pub oidc_provider: PathBuf,
    pub wasm_filter: PathBuf,
    pub authz_server: PathBuf,
    pub stand_in: PathBuf,
    pub kubegate: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The cargo target profile directory the running executable was built into.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

/// The minor versions of kubectl the harness runs: the default, the oldest, the newest.
pub const KUBECTL_DEFAULT_MINOR: u32 = 33;
pub const KUBECTL_OLDEST_MINOR: u32 = 27;
pub const KUBECTL_NEWEST_MINOR: u32 = 35;

/// The Kubernetes `(major, minor)` a kubectl binary says it is (`kubectl version
/// --client -o json`), asked once per path.
pub fn kubectl_version(kubectl: &Path) -> anyhow::Result<(u32, u32)> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, (u32, u32)>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(version) = seen.lock().ok().and_then(|m| m.get(kubectl).copied()) {
        return Ok(version);
    }
    let output = std::process::Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|e| anyhow::anyhow!("running {} version: {e}", kubectl.display()))?;
    anyhow::ensure!(output.status.success(), "{} version failed: {}", kubectl.display(), output.status);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| anyhow::anyhow!("{} version printed no JSON: {e}", kubectl.display()))?;
    // `minor` may carry a `+` (vendor builds): the digits are the version.
    let number = |field: &str| -> anyhow::Result<u32> {
        let text = doc["clientVersion"][field].as_str().unwrap_or_default();
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().map_err(|_| anyhow::anyhow!("{}: clientVersion.{field} is {text:?}", kubectl.display()))
    };
    let version = (number("major")?, number("minor")?);
    if let Ok(mut m) = seen.lock() {
        m.insert(kubectl.to_owned(), version);
    }
    Ok(version)
}

/// Fails unless `kubectl` is kubectl 1.`minor`: a test row named for a version runs
/// that version, never whatever `kubectl` happens to be.
pub fn ensure_kubectl_version(kubectl: &Path, minor: u32) -> anyhow::Result<()> {
    let (major, found) = kubectl_version(kubectl)?;
    anyhow::ensure!(
        (major, found) == (1, minor),
        "{} is kubectl {major}.{found}, but the harness runs it as kubectl 1.{minor}",
        kubectl.display()
    );
    Ok(())
}

impl Tools {
    /// Finds every tool, failing with what to run when one is missing.
    pub fn locate() -> anyhow::Result<Self> {
        let root = repo_root();
        let profile = profile_dir();
        let target = profile.parent().map(Path::to_path_buf).unwrap_or_default();
        let tools = Self {
            envoy: from_env_or("KUBEGATE_ENVOY", root.join(".tools/venv/bin/envoy")),
            kubectl: from_env_or(
                "KUBEGATE_KUBECTL",
                PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{KUBECTL_DEFAULT_MINOR}")),
            ),
            kubectl_oldest: from_env_or(
                "KUBEGATE_KUBECTL_OLDEST",
                PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.27"),
            ),
            kubectl_newest: from_env_or("KUBEGATE_KUBECTL_NEWEST", root.join(".tools/kubectl-1.35")),
            node: from_env_or("KUBEGATE_NODE", PathBuf::from("node")),
            oidc_provider: root.join("tests/oidc-provider/server.mjs"),
            wasm_filter: from_env_or(
                "KUBEGATE_WASM_FILTER",
                target.join("wasm32-wasip1/release/kubegate_wasm_filter.wasm"),
            ),
            authz_server: from_env_or("KUBEGATE_AUTHZ_SERVER", profile.join("kubegate-authz-server")),
            stand_in: from_env_or("KUBEGATE_STAND_IN", profile.join("kube-apiserver-stand-in")),
            kubegate: from_env_or("KUBEGATE_CLI", profile.join("kubegate")),
        };
        for (name, path) in [
            ("envoy (make tools)", &tools.envoy),
            ("kubectl 1.33 (the machine image)", &tools.kubectl),
            ("kubectl 1.35 (make tools)", &tools.kubectl_newest),
            ("kubectl 1.27 (the machine image)", &tools.kubectl_oldest),
            ("oidc-provider modules (make tools)", &root.join("tests/oidc-provider/node_modules/oidc-provider")),
            ("wasm filter (make build)", &tools.wasm_filter),
            ("authz-server (make build)", &tools.authz_server),
            ("API-server stand-in (make build)", &tools.stand_in),
            ("kubegate CLI (make build)", &tools.kubegate),
        ] {
            anyhow::ensure!(path.exists(), "{name} not found at {}", path.display());
        }
        for (kubectl, minor) in [
            (&tools.kubectl, KUBECTL_DEFAULT_MINOR),
            (&tools.kubectl_oldest, KUBECTL_OLDEST_MINOR),
            (&tools.kubectl_newest, KUBECTL_NEWEST_MINOR),
        ] {
            ensure_kubectl_version(kubectl, minor)?;
        }
        Ok(tools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine image's kubectl 1.28 is not the oldest (1.27) nor the default (1.33):
    /// handed over as either, the harness refuses it instead of running a mislabelled row.
    #[test]
    fn a_kubectl_of_another_version_is_refused() -> anyhow::Result<()> {
        let k128 = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.28");
        assert_eq!(kubectl_version(k128)?, (1, 28));
        ensure_kubectl_version(k128, 28)?;
        let err = ensure_kubectl_version(k128, KUBECTL_OLDEST_MINOR).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is kubectl 1.28, but the harness runs it as kubectl 1.27"), "{err}");
        assert!(ensure_kubectl_version(k128, KUBECTL_DEFAULT_MINOR).is_err());
        assert!(ensure_kubectl_version(Path::new("/nonexistent/kubectl"), 33).is_err());
        Ok(())
    }

    #[test]
    fn every_kubectl_the_harness_runs_is_the_version_it_claims() -> anyhow::Result<()> {
        let tools = Tools::locate()?;
        assert_eq!(kubectl_version(&tools.kubectl)?, (1, KUBECTL_DEFAULT_MINOR));
        assert_eq!(kubectl_version(&tools.kubectl_oldest)?, (1, KUBECTL_OLDEST_MINOR));
        assert_eq!(kubectl_version(&tools.kubectl_newest)?, (1, KUBECTL_NEWEST_MINOR));
        Ok(())
    }
}
