//! The manifests a mesh team applies (issue #20): `deploy/istio/` (Istio 1.24: meshConfig
//! provider, AuthorizationPolicy CUSTOM, one WasmPlugin, routing, TLS, the optional SPDY
//! EnvoyFilter, the gateway credential) and `deploy/envoy-gateway/` (Envoy Gateway v1.4:
//! SecurityPolicy, EnvoyExtensionPolicy, ClientTrafficPolicy, BackendTrafficPolicy,
//! BackendTLSPolicy, HTTPRoute, credential injection).
//!
//! Every document validates: Istio's against the typed models of Istio 1.24's CRDs
//! (`tests/tools/validate_istio_manifests.py`, PyPI cloudcoil-models-istio, pinned in the
//! Makefile and installed by `make chart-tools` into `.tools/venv`), Envoy Gateway's
//! against JSON schemas hand-written from its API reference
//! (`tests/tools/validate_envoy_gateway_manifests.py`, `tests/mesh-schemas/`). Both
//! validators refuse a wrong field. And the manifests say what kubegate's security rests
//! on (docs/mesh.md): one filter stage, `{"stage":"inject"}`, after ext_authz; both fail
//! closed; every header sent to authz-server; slashes kept; SPDY upgrades; the filter
//! pinned by SHA-256.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The Python with the Istio models and jsonschema (`make chart-tools`).
fn python() -> PathBuf {
    let python = std::env::var_os("KUBEGATE_TOOLS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/venv/bin/python"));
    assert!(python.exists(), "{} not found (run `make chart-tools`)", python.display());
    python
}

const ISTIO_VALIDATOR: &str = "tests/tools/validate_istio_manifests.py";
const EG_VALIDATOR: &str = "tests/tools/validate_envoy_gateway_manifests.py";

/// Runs a validator on `paths`: whether it passed, and everything it printed.
fn validate(validator: &str, paths: &[&Path]) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo_root().join(validator))
        .args(paths)
        .output()
        .unwrap_or_else(|e| panic!("{validator}: {e}"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

/// Every YAML document of every file in `deploy/<dir>`, with its file name.
fn documents(dir: &str) -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy").join(dir);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), value));
            }
        }
    }
    out
}

fn of_kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|(_, d)| d["kind"].as_str() == Some(kind)).map(|(_, d)| d).collect()
}

fn is_sha256(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn inject_config() -> Value {
    serde_yaml::from_str("stage: inject").unwrap_or_default()
}

/// A temporary directory holding `files` (name, text).
fn temp_files(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("kubegate-mesh-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

fn deploy_file(path: &str) -> String {
    let path = repo_root().join("deploy").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with `from` replaced once; fails if `from` is not there.
fn broken(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found");
    text.replacen(from, to, 1)
}

#[test]
fn every_istio_document_validates_against_istio_1_24s_models() {
    let dir = repo_root().join("deploy/istio");
    let (ok, report) = validate(ISTIO_VALIDATOR, &[&dir]);
    assert!(ok, "{report}");
    let docs = documents("istio");
    assert!(report.contains(&format!("validated {} documents", docs.len())), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    // Each Istio kind was checked against its model, not merely parsed.
    for kind in ["WasmPlugin", "AuthorizationPolicy", "EnvoyFilter", "DestinationRule", "Gateway", "VirtualService"] {
        assert!(report.contains(&format!("against Istio 1.24's {kind} model")), "{kind}:\n{report}");
    }
    assert!(report.contains("meshConfig values fragment against"), "{report}");
}

#[test]
fn every_envoy_gateway_document_validates_against_its_schema() {
    let dir = repo_root().join("deploy/envoy-gateway");
    let (ok, report) = validate(EG_VALIDATOR, &[&dir]);
    assert!(ok, "{report}");
    let docs = documents("envoy-gateway");
    assert!(report.contains(&format!("validated {} documents", docs.len())), "{report}");
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            report.contains(&format!("tests/mesh-schemas/envoy-gateway/{kind}.schema.json")),
            "{file}: {kind} not checked against its schema:\n{report}"
        );
    }
}

/// The validators refuse what Istio's and Envoy Gateway's APIs refuse: written into a
/// temporary directory, never under deploy/.
#[test]
fn the_validators_refuse_wrong_fields() {
    let wasm = deploy_file("istio/60-wasmplugin.yaml");
    let values = deploy_file("istio/00-istiod-values.yaml");
    let istio = temp_files(&[
        ("vm-id.yaml", broken(&wasm, "  pluginName: kubegate\n", "  pluginName: kubegate\n  vmId: kubegate.inject\n")),
        ("phase.yaml", broken(&wasm, "  phase: AUTHN\n", "  phase: PRE_AUTHN\n")),
        ("fail-strategy.yaml", broken(&wasm, "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_RELOAD")),
        ("00-istiod-values.yaml", broken(&values, "      failOpen: false", "      failopen: false")),
        ("widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n".to_string()),
    ]);
    for (file, reason) in [
        ("vm-id.yaml", ".spec.vmId: not a field of the schema"),
        ("phase.yaml", "PRE_AUTHN"),
        ("fail-strategy.yaml", "FAIL_RELOAD"),
        ("00-istiod-values.yaml", "'failopen' was unexpected"),
        ("widget.yaml", "no schema for this kind"),
    ] {
        let path = istio.path().join(file);
        let (ok, report) = validate(ISTIO_VALIDATOR, &[&path]);
        assert!(!ok, "{file} accepted:\n{report}");
        let line = report.lines().find(|l| l.starts_with("FAIL")).unwrap_or_default();
        assert!(line.contains(file) && line.contains(reason), "{file}: expected {reason:?}:\n{report}");
    }

    let security = deploy_file("envoy-gateway/40-securitypolicy.yaml");
    let extension = deploy_file("envoy-gateway/50-envoyextensionpolicy.yaml");
    let client = deploy_file("envoy-gateway/70-clienttrafficpolicy.yaml");
    let eg = temp_files(&[
        ("misspelt.yaml", broken(&security, "    failOpen: false", "    failOpn: false")),
        ("sha.yaml", broken(&extension, "sha256: \"0000", "sha256: \"sha256:0000")),
        ("slashes.yaml", broken(&client, "escapedSlashesAction: KeepUnchanged", "escapedSlashesAction: Keep")),
        ("widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n".to_string()),
    ]);
    for (file, reason) in [
        ("misspelt.yaml", "'failOpn' was unexpected"),
        ("sha.yaml", "/spec/wasm/0/code/image/sha256"),
        ("slashes.yaml", "/spec/path/escapedSlashesAction"),
        ("widget.yaml", "no schema for this kind"),
    ] {
        let path = eg.path().join(file);
        let (ok, report) = validate(EG_VALIDATOR, &[&path]);
        assert!(!ok, "{file} accepted:\n{report}");
        let line = report.lines().find(|l| l.starts_with("FAIL")).unwrap_or_default();
        assert!(line.contains(file) && line.contains(reason), "{file}: expected {reason:?}:\n{report}");
    }
}

/// Istio: one WasmPlugin, the inject stage, fail closed and pinned; ext_authz fail closed
/// with a timeout and no body; the CUSTOM policy names that provider on the same
/// gateway; SPDY upgrades; HTTP/1.1 to the API server.
#[test]
fn the_istio_recipe_runs_one_inject_stage_closed() {
    let docs = documents("istio");
    let wasm = of_kind(&docs, "WasmPlugin");
    assert_eq!(wasm.len(), 1, "exactly one WasmPlugin");
    let spec = &wasm[0]["spec"];
    assert_eq!(spec["pluginConfig"], inject_config(), "the inject stage only");
    assert_eq!(spec["failStrategy"].as_str(), Some("FAIL_CLOSE"));
    assert_eq!(spec["phase"].as_str(), Some("AUTHN"));
    assert_eq!(spec["pluginName"].as_str(), Some("kubegate"));
    assert!(is_sha256(&spec["sha256"]), "sha256 pinned: {:?}", spec["sha256"]);
    assert!(spec["url"].as_str().is_some_and(|u| u.starts_with("oci://")));
    // No other way in for a second stage: no EnvoyFilter adds a wasm filter.
    let envoy_filters = of_kind(&docs, "EnvoyFilter");
    for filter in &envoy_filters {
        let text = serde_yaml::to_string(filter).unwrap_or_default();
        assert!(!text.contains("envoy.filters.http.wasm") && !text.contains("strip"), "{text}");
    }

    let values = docs
        .iter()
        .find(|(f, _)| f.ends_with("istiod-values.yaml"))
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no istiod values"));
    let providers = values["meshConfig"]["extensionProviders"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(providers.len(), 1);
    let grpc = &providers[0]["envoyExtAuthzGrpc"];
    assert_eq!(grpc["failOpen"].as_bool(), Some(false));
    assert!(grpc["timeout"].as_str().is_some_and(|t| t != "600s"), "a timeout shorter than Istio's 600s");
    assert!(grpc["includeRequestBodyInCheck"].is_null(), "no request body to ext_authz");
    assert_eq!(grpc["port"].as_u64(), Some(9001));

    let policies = of_kind(&docs, "AuthorizationPolicy");
    assert_eq!(policies.len(), 1);
    let policy = &policies[0]["spec"];
    assert_eq!(policy["action"].as_str(), Some("CUSTOM"));
    assert_eq!(policy["provider"]["name"], providers[0]["name"]);
    assert_eq!(policy["selector"], spec["selector"], "ext_authz and the filter on the same gateway");

    let spdy = envoy_filters.iter().any(|f| {
        f["spec"]["configPatches"].as_sequence().into_iter().flatten().any(|p| {
            p["patch"]["value"]["typed_config"]["upgrade_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|u| u["upgrade_type"].as_str() == Some("spdy/3.1"))
        })
    });
    assert!(spdy, "an EnvoyFilter adds spdy/3.1 upgrades");

    let apiserver = of_kind(&docs, "DestinationRule")
        .into_iter()
        .find(|d| d["spec"]["host"].as_str() == Some("kubernetes.default.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no DestinationRule for the API server"));
    let traffic = &apiserver["spec"]["trafficPolicy"];
    assert_eq!(traffic["connectionPool"]["http"]["h2UpgradePolicy"].as_str(), Some("DO_NOT_UPGRADE"));
    assert_eq!(traffic["portLevelSettings"][0]["tls"]["mode"].as_str(), Some("SIMPLE"));
}

/// Envoy Gateway: one wasm entry, the inject stage, fail closed and pinned; extAuth over
/// gRPC, fail closed, every header (no headersToExtAuth), no body; both on the same
/// HTTPRoute; slashes kept; websocket and SPDY upgrades.
#[test]
fn the_envoy_gateway_recipe_runs_one_inject_stage_closed() {
    let docs = documents("envoy-gateway");
    let extensions = of_kind(&docs, "EnvoyExtensionPolicy");
    assert_eq!(extensions.len(), 1, "exactly one EnvoyExtensionPolicy");
    let wasm = extensions[0]["spec"]["wasm"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(wasm.len(), 1, "exactly one wasm entry");
    assert_eq!(wasm[0]["config"], inject_config(), "the inject stage only");
    assert_eq!(wasm[0]["failOpen"].as_bool(), Some(false));
    assert_eq!(wasm[0]["rootID"].as_str(), Some("kubegate"));
    let code = &wasm[0]["code"];
    let source = if code["type"].as_str() == Some("Image") { &code["image"] } else { &code["http"] };
    assert!(is_sha256(&source["sha256"]), "sha256 pinned: {:?}", source["sha256"]);

    let security = of_kind(&docs, "SecurityPolicy");
    assert_eq!(security.len(), 1);
    let ext_auth = &security[0]["spec"]["extAuth"];
    assert_eq!(ext_auth["failOpen"].as_bool(), Some(false));
    assert!(ext_auth["headersToExtAuth"].is_null(), "every header goes to authz-server");
    assert!(ext_auth["bodyToExtAuth"].is_null(), "no request body to ext_authz");
    assert_eq!(ext_auth["grpc"]["backendRefs"][0]["port"].as_u64(), Some(9001));
    assert_eq!(
        security[0]["spec"]["targetRefs"], extensions[0]["spec"]["targetRefs"],
        "ext_authz and the filter on the same routes"
    );
    let route = &security[0]["spec"]["targetRefs"][0];
    assert_eq!(route["kind"].as_str(), Some("HTTPRoute"));
    let routes = of_kind(&docs, "HTTPRoute");
    assert!(routes.iter().any(|r| r["metadata"]["name"] == route["name"]), "the targeted HTTPRoute is shipped");

    let client = of_kind(&docs, "ClientTrafficPolicy");
    assert_eq!(client.len(), 1);
    let path = &client[0]["spec"]["path"];
    assert_eq!(path["disableMergeSlashes"].as_bool(), Some(true));
    assert_eq!(path["escapedSlashesAction"].as_str(), Some("KeepUnchanged"));

    let backend = of_kind(&docs, "BackendTrafficPolicy");
    assert_eq!(backend.len(), 1);
    let upgrades: Vec<_> = backend[0]["spec"]["httpUpgrade"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|u| u["type"].as_str())
        .collect();
    assert_eq!(upgrades, ["websocket", "spdy/3.1"]);
    assert_eq!(backend[0]["spec"]["targetRefs"], security[0]["spec"]["targetRefs"]);

    let tls = of_kind(&docs, "BackendTLSPolicy");
    assert!(
        tls.iter().any(|p| p["spec"]["targetRefs"][0]["name"].as_str() == Some("kubernetes")
            && p["spec"]["validation"]["hostname"].as_str() == Some("kubernetes.default.svc")),
        "TLS to the API server verified by name"
    );
}
