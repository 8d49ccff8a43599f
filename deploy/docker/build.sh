#!/usr/bin/env bash
# Builds what kubegate's images contain, natively: each Dockerfile here runs this script
# in its build stage and copies the result into a distroless runtime, and the tests
# (tests/tests/docker_build.rs) run it here, where no container engine is available, and
# check what it produced.
#
# Usage: deploy/docker/build.sh OUT_DIR
#   OUT_DIR/kubegate/  the kubegate image's files:
#     usr/local/bin/kubegate-authz-server
#     usr/local/bin/kubegate-install-filter   (the Helm chart's init container)
#     usr/local/bin/kubegate                  (the CLI, for `kubegate doctor` in the pod)
#     usr/share/kubegate/kubegate_wasm_filter.wasm, and .sha256 beside it
#   OUT_DIR/cli/       the CLI image's files: usr/local/bin/kubegate
#
# KUBEGATE_BUILD_PROFILE=release (the default, what the images ship) or debug (the
# tests: the binaries `make build` already built). The filter is always a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${1:?usage: deploy/docker/build.sh OUT_DIR}"
profile="${KUBEGATE_BUILD_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
# debug builds what `make build` builds (the workspace's binaries), so that cargo's
# feature unification is the same and nothing is compiled twice.
case "$profile" in
  release) packages=(--release -p kubegate-authz-server -p kubegate-cli) ;;
  debug) packages=(--workspace) ;;
  *) echo "KUBEGATE_BUILD_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac

rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo build --locked "${packages[@]}" --bins
cargo build --locked -p kubegate-wasm-filter --target wasm32-wasip1 --release

image="$out/kubegate"
cli="$out/cli"
rm -rf "$image" "$cli"
mkdir -p "$image/usr/local/bin" "$image/usr/share/kubegate" "$cli/usr/local/bin"
install -m 0755 "$target/$profile/kubegate-authz-server" "$image/usr/local/bin/"
install -m 0755 "$target/$profile/kubegate" "$cli/usr/local/bin/"
# The CLI in kubegate's image too, for `kubegate doctor` inside the gateway's pod.
install -m 0755 "$target/$profile/kubegate" "$image/usr/local/bin/"
rustc --edition 2021 -O -C strip=symbols deploy/docker/install_filter.rs -o "$image/usr/local/bin/kubegate-install-filter"

wasm="$image/usr/share/kubegate/kubegate_wasm_filter.wasm"
install -m 0644 "$target/wasm32-wasip1/release/kubegate_wasm_filter.wasm" "$wasm"
sha256sum "$wasm" | cut -d' ' -f1 > "$wasm.sha256"
digest="$(cat "$wasm.sha256")"
# The installer's own SHA-256 must agree with sha256sum's, or the pin would never match.
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
"$image/usr/local/bin/kubegate-install-filter" --sha256 "$digest" "$wasm" "$check/filter.wasm" >/dev/null
cmp -s "$wasm" "$check/filter.wasm"

echo "kubegate image files in $image, CLI image files in $cli"
echo "wasm filter sha256: $digest  (the Helm chart's wasmFilter.sha256)"
