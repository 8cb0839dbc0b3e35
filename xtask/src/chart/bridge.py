"""Helm's engine and the Kubernetes schemas, for `cargo xtask chart`.

A thin bridge: one JSON request on stdin, one JSON answer on stdout. The cases, the
snapshots and the verdicts live in the Rust side (xtask/src/chart.rs); this file only
calls helm-python-sdk (Helm v4's engine through its C ABI) and kubernetes-validate.

Requests:
  {"op": "render", "chart": DIR, "values": {...}, "name": N, "namespace": NS}
      -> {"manifests": {template path: text}} or {"error": message}
  {"op": "lint", "chart": DIR, "values": {...}}
      -> {"errors": [...], "messages": [...]}
  {"op": "set", "expressions": ["a.b=c", ...]}
      -> {"values": the values `helm --set` would give, merged in order}
  {"op": "parse", "documents": [YAML text]}
      -> {"objects": [every YAML document as JSON]}
  {"op": "install", "chart": DIR, "values": {...}, "name": N, "namespace": NS,
   "context": kubeconfig context, "dry_run": null or "client"}
      -> {"manifest": text} (an upgrade when the release exists)
  {"op": "validate", "documents": [YAML text], "kube_versions": [...]}
      -> {"problems": [...], "custom": [kind names checked against our CRDs],
          "unchecked": [kinds no schema is known for]}
"""

import json
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml


def render(request):
    try:
        with helm.Chart.load(request["chart"]) as chart:
            manifests = chart.render(
                values=request.get("values"),
                name=request["name"],
                namespace=request["namespace"],
                is_install=True,
            )
    except helm.HelmError as error:
        return {"error": str(error)}
    return {"manifests": manifests}


def lint(request):
    report = helm.lint(request["chart"], request.get("values"), strict=True)
    return {
        "errors": report.get("errors") or [],
        "messages": [
            "{} {}: {}".format(m.get("severity"), m.get("path"), m.get("error"))
            for m in report.get("messages") or []
        ],
    }


def merge(into, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def set_values(request):
    values = {}
    for expression in request["expressions"]:
        merge(values, helm.parse_set_string(expression))
    return {"values": values}


def parse(request):
    objects = []
    for text in request["documents"]:
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return {"objects": objects}


def install(request):
    cluster = dict(kube_context=request.get("context"), namespace=request["namespace"])
    with helm.Config(**cluster) as config:
        with helm.Chart.load(request["chart"]) as chart:
            dry_run = request.get("dry_run")
            names = [r.get("name") for r in config.list()] if dry_run is None else []
            common = dict(values=request.get("values"), namespace=request["namespace"],
                          dry_run=dry_run, timeout=300, wait=None if dry_run else "watcher")
            if request["name"] in names:
                release = config.upgrade(chart, request["name"], **common)
            else:
                release = config.install(chart, request["name"], create_namespace=True, **common)
    return {"manifest": release.get("manifest", "")}


def strict_schema(schema):
    """A CRD's structural schema as plain JSON Schema that rejects unknown fields, as
    kube-apiserver's strict field validation does (it would otherwise prune them)."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    if out.get("format") in ("byte", "int64", "int32"):
        del out["format"]
    return out


def crd_schemas(documents):
    schemas = {}
    for doc in documents:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            key = (spec["group"] + "/" + version["name"], spec["names"]["kind"])
            schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def validate(request):
    documents = []
    for text in request["documents"]:
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    crds = crd_schemas(documents)
    problems, custom, unchecked = [], set(), set()
    for doc in documents:
        kind = doc.get("kind", "?")
        where = "{} {}".format(kind, (doc.get("metadata") or {}).get("name", "?"))
        ours = crds.get((doc.get("apiVersion"), kind))
        if ours is not None:
            custom.add(kind)
            for error in jsonschema.Draft7Validator(ours).iter_errors(doc):
                path = "/".join(str(p) for p in error.absolute_path)
                problems.append("{}: {}: {}".format(where, path, error.message))
            continue
        for version in request["kube_versions"]:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unchecked.add("{} {}".format(doc.get("apiVersion"), kind))
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                problems.append("{} (Kubernetes {}): {}: {}".format(where, version, path, error.message))
    return {"problems": problems, "custom": sorted(custom), "unchecked": sorted(unchecked)}


def main():
    request = json.load(sys.stdin)
    handler = {
        "render": render,
        "lint": lint,
        "set": set_values,
        "parse": parse,
        "install": install,
        "validate": validate,
    }[request["op"]]
    json.dump(handler(request), sys.stdout)


if __name__ == "__main__":
    main()
