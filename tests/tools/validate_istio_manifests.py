#!/usr/bin/env python3
"""Validates every YAML document of kubegate's Istio recipe (deploy/istio/); none is skipped.

Usage: validate_istio_manifests.py [DIR_OR_FILE...]     (default: deploy/istio)

- Istio's kinds (networking.istio.io, security.istio.io, extensions.istio.io): against
  the typed models of Istio 1.24's CRDs (PyPI cloudcoil-models-istio==1.24.2.1, pinned
  in the Makefile), strictly: the object must read back from the model exactly as
  written, so a field the model does not know (a WasmPlugin `vmId`) is an error rather
  than silently dropped, and an enum value it does not know (phase `PRE_AUTHN`) too.
- Kubernetes' own kinds (the SDS ConfigMap): against Kubernetes' OpenAPI schema
  (kubernetes-validate), strictly.
- A Helm values fragment (a document with no apiVersion/kind in a file named
  `*-values.yaml`): against the hand-written JSON schema of the same name under
  tests/mesh-schemas/istio/ (`<stem>.schema.json`, e.g. istiod-values.schema.json for
  00-istiod-values.yaml).
- Anything else is an error: no schema, no pass.

Prints one line per document (`ok   FILE: Kind/name ...` or `FAIL FILE: Kind/name ...:
reason`), then `validated N documents`; exits 1 on any failure.
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(ROOT, "tests", "mesh-schemas", "istio")
KUBERNETES = "1.37.0"


def istio_models():
    from cloudcoil.models.istio.extensions import v1alpha1 as extensions
    from cloudcoil.models.istio.networking import v1 as networking
    from cloudcoil.models.istio.networking import v1alpha3 as networking_v1alpha3
    from cloudcoil.models.istio.security import v1 as security

    return {
        ("networking.istio.io/v1", "Gateway"): networking.Gateway,
        ("networking.istio.io/v1", "VirtualService"): networking.VirtualService,
        ("networking.istio.io/v1", "DestinationRule"): networking.DestinationRule,
        ("networking.istio.io/v1alpha3", "EnvoyFilter"): networking_v1alpha3.EnvoyFilter,
        ("security.istio.io/v1", "AuthorizationPolicy"): security.AuthorizationPolicy,
        ("extensions.istio.io/v1alpha1", "WasmPlugin"): extensions.WasmPlugin,
    }


def differences(written, read_back, path=""):
    """Where `read_back` (the model's reading) differs from what was `written`."""
    if isinstance(written, dict) and isinstance(read_back, dict):
        out = []
        for key, value in written.items():
            if key not in read_back:
                out.append(f"{path}.{key}: not a field of the schema")
            else:
                out.extend(differences(value, read_back[key], f"{path}.{key}"))
        return out
    if isinstance(written, list) and isinstance(read_back, list) and len(written) == len(read_back):
        return [d for i, (w, r) in enumerate(zip(written, read_back)) for d in differences(w, r, f"{path}[{i}]")]
    return [] if written == read_back else [f"{path}: {written!r} reads back as {read_back!r}"]


def check_model(model, obj):
    try:
        read_back = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_unset=True)
    except Exception as e:  # pydantic's ValidationError lists every field
        return [re.sub(r"\s+", " ", str(e))]
    return differences(obj, read_back)


def check_kubernetes(obj):
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        return []
    except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError) as e:
        where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
        return [f"{where}: {getattr(e, 'message', str(e))}"]


def check_schema(schema_path, obj):
    import jsonschema

    if not os.path.exists(schema_path):
        return [f"no schema {os.path.relpath(schema_path, ROOT)} for this values file"]
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def files(args):
    for arg in args:
        if os.path.isdir(arg):
            for name in sorted(os.listdir(arg)):
                if name.endswith((".yaml", ".yml")):
                    yield os.path.join(arg, name)
        else:
            yield arg


def main() -> None:
    args = sys.argv[1:] or [os.path.join(ROOT, "deploy", "istio")]
    if any(a in ("-h", "--help") for a in args):
        sys.exit(__doc__)
    models = istio_models()
    count = failures = 0
    for path in files(args):
        with open(path) as f:
            try:
                documents = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                print(f"FAIL {path}: not YAML: {e}")
                failures += 1
                continue
        stem = os.path.splitext(os.path.basename(path))[0]
        for obj in documents:
            count += 1
            if not isinstance(obj, dict):
                print(f"FAIL {path}: a document that is not a mapping")
                failures += 1
                continue
            api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
            name = f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"
            if not api and not kind and stem.endswith("-values"):
                schema = os.path.join(SCHEMAS, re.sub(r"^\d+-", "", stem) + ".schema.json")
                what, errors = f"values fragment against {os.path.relpath(schema, ROOT)}", check_schema(schema, obj)
                name = "meshConfig"
            elif (api, kind) in models:
                what, errors = f"against Istio 1.24's {kind} model", check_model(models[(api, kind)], obj)
            elif "." not in api.split("/")[0] and api:
                what, errors = f"against Kubernetes {KUBERNETES}", check_kubernetes(obj)
            else:
                what, errors = f"({api or 'no apiVersion'})", ["no schema for this kind"]
            if errors:
                failures += 1
                print(f"FAIL {path}: {name} {what}: " + "; ".join(errors))
            else:
                print(f"ok   {path}: {name} {what}")
    if failures:
        sys.exit(f"{failures} failure(s) in {count} documents")
    print(f"validated {count} documents")


if __name__ == "__main__":
    main()
