#!/usr/bin/env python3
"""Validates every YAML document of kubegate's Envoy Gateway recipe (deploy/envoy-gateway/).

Usage: validate_envoy_gateway_manifests.py [DIR_OR_FILE...]   (default: deploy/envoy-gateway)

Envoy Gateway publishes no typed models, so each kind is checked against a JSON schema
hand-written from Envoy Gateway v1.4's API reference (and Gateway API v1.3's, for the
gateway.networking.k8s.io kinds): tests/mesh-schemas/envoy-gateway/<kind>.schema.json,
with python-jsonschema (draft 2020-12). The schemas cover only the fields the recipe
uses and are closed, so a misspelt field (`failOpn`) is refused. A kind with no schema,
or an apiVersion the schema does not name, is an error: no schema, no pass.

Prints one line per document (`ok   FILE: Kind/name ...` or `FAIL FILE: Kind/name ...:
reason`), then `validated N documents`; exits 1 on any failure.
"""
import json
import os
import sys

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(ROOT, "tests", "mesh-schemas", "envoy-gateway")


def files(args):
    for arg in args:
        if os.path.isdir(arg):
            for name in sorted(os.listdir(arg)):
                if name.endswith((".yaml", ".yml")):
                    yield os.path.join(arg, name)
        else:
            yield arg


def errors_of(obj):
    kind = str(obj.get("kind", ""))
    path = os.path.join(SCHEMAS, f"{kind.lower()}.schema.json")
    if not kind or not os.path.exists(path):
        return None, ["no schema for this kind"]
    with open(path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return os.path.relpath(path, ROOT), [f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]


def main() -> None:
    args = sys.argv[1:] or [os.path.join(ROOT, "deploy", "envoy-gateway")]
    if any(a in ("-h", "--help") for a in args):
        sys.exit(__doc__)
    count = failures = 0
    for path in files(args):
        with open(path) as f:
            try:
                documents = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                print(f"FAIL {path}: not YAML: {e}")
                failures += 1
                continue
        for obj in documents:
            count += 1
            if not isinstance(obj, dict):
                print(f"FAIL {path}: a document that is not a mapping")
                failures += 1
                continue
            name = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
            schema, errors = errors_of(obj)
            if errors:
                failures += 1
                print(f"FAIL {path}: {name} ({obj.get('apiVersion', 'no apiVersion')}): " + "; ".join(errors))
            else:
                print(f"ok   {path}: {name} against {schema}")
    if failures:
        sys.exit(f"{failures} failure(s) in {count} documents")
    print(f"validated {count} documents")


if __name__ == "__main__":
    main()
