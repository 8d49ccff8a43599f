//! Where the real programs are: built workspace binaries next to the test executable,
//! and the installed Envoy, kubectl and OIDC provider (`make tools` puts them in
//! `.tools/` and `tests/oidc-provider/node_modules`). Each can be overridden by an
//! environment variable.

use std::path::{Path, PathBuf};

/// Paths of every program a gateway stack runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub envoy: PathBuf,
    pub kubectl: PathBuf,
    /// The oldest and the newest kubectl we test streaming with (1.27, 1.35).
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

fn default_kubectl() -> PathBuf {
    let pinned = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    if pinned.exists() {
        pinned
    } else {
        PathBuf::from("kubectl")
    }
}

impl Tools {
    /// Finds every tool, failing with what to run when one is missing.
    pub fn locate() -> anyhow::Result<Self> {
        let root = repo_root();
        let profile = profile_dir();
        let target = profile.parent().map(Path::to_path_buf).unwrap_or_default();
        let tools = Self {
            envoy: from_env_or("KUBEGATE_ENVOY", root.join(".tools/venv/bin/envoy")),
            kubectl: from_env_or("KUBEGATE_KUBECTL", default_kubectl()),
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
        Ok(tools)
    }
}
