"""What infra/ gives the processes that sign in to PostgreSQL, read out of the Bicep: the
environment of each app's container (infra/app/<module>.bicep), the environment of the
bootstrap job's container (main.bicep's `env` plus what infra/modules/bootstrap-job.bicep
adds), and every Dapr component of dapr-components.bicep in the shape of a Dapr component
file (type, version, ignoreErrors, initTimeout, metadata, scopes).

Values are evaluated through main.bicep as `azd provision` deploys them (its variables,
its parameters' defaults, what it passes to each module). What only Azure knows is left as
a placeholder between braces, named after where the Bicep reads it:

- a module's output: `{<module>.<output>}`, e.g. `{postgres.host}`,
  `{identities.dataClientId}`;
- a property of an `existing` resource: `{<its name>.<property path>}`, e.g.
  `{postgres.name.properties.fullyQualifiedDomainName}` for the server whose name is
  `{postgres.name}`; the resource's `name` itself is its name.

A reference the evaluator does not know makes the script fail, naming it, rather than
print something else. `python tests/infra/app_env.py` prints the whole as JSON: the
Azure-mode tests of tests/testkit read it, fill in the placeholders with their stand-ins'
values and start the apps, the sidecars and the bootstrap with exactly that.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_support import ROOT, BicepEval, Unknown, app_modules, parse_bicep  # noqa: E402

BOOTSTRAP_MODULE = "modules/bootstrap-job.bicep"
COMPONENTS_MODULE = "modules/dapr-components.bicep"
CONTAINER_APPS = "Microsoft.App/containerApps"
JOBS = "Microsoft.App/jobs"
DAPR_COMPONENTS = "Microsoft.App/managedEnvironments/daprComponents"


def _path(node):
    """`a.b.c` as ["a", "b", "c"] (pycep nests accessors to the right), or None when the
    expression has anything but property accessors."""
    if isinstance(node, str):
        return [node]
    operator = node.get("operator", {}) if isinstance(node, dict) else {}
    if operator.get("type") != "property_accessor":
        return None
    first, rest = operator["operands"]["operand_1"], operator["operands"]["operand_2"]
    tail = _path(rest)
    return None if not isinstance(first, str) or tail is None else [first, *tail]


class _Given:
    """A module's parameters as its caller passes them, evaluated in the caller's file when
    read; a parameter not passed takes its own default, evaluated in the module."""

    def __init__(self, caller, given, module_doc, module_eval):
        self.caller, self.given = caller, given
        self.defaults = {name: spec["default"] for name, spec in module_doc["parameters"].items()
                         if spec.get("default") is not None}
        self.module_eval = module_eval

    def __contains__(self, name):
        return name in self.given or name in self.defaults

    def __getitem__(self, name):
        if name in self.given:
            return self.caller.value(self.given[name])
        return self.module_eval().value(self.defaults[name])


class InfraEval(BicepEval):
    """BicepEval with module outputs and existing resources as placeholders (above), and
    `concat` of arrays."""

    def value(self, node):
        if isinstance(node, dict) and "operator" in node:
            path = _path(node)
            if path and path[0] in self.doc.get("modules", {}):
                if len(path) != 3 or path[1] != "outputs":
                    raise Unknown(f"module reference {'.'.join(path)}")
                return "{" + f"{path[0]}.{path[2]}" + "}"
            if path and self._existing(path[0]):
                name = self.value(self.doc["resources"][path[0]]["config"]["name"])
                if path[1:] == ["name"]:
                    return name
                return "{" + f"{name.strip('{}')}.{'.'.join(path[1:])}" + "}"
        if isinstance(node, dict) and node.get("function", {}).get("type") == "concat":
            parts = [self.value(a) for a in node["function"]["parameters"].values()]
            if not all(isinstance(p, list) for p in parts):
                raise Unknown("concat() of anything but arrays")
            return [item for part in parts for item in part]
        return super().value(node)

    def _existing(self, symbol):
        resource = self.doc.get("resources", {}).get(symbol)
        return bool(resource and resource.get("existing"))


def _main(root):
    doc = parse_bicep(root / "infra/main.bicep")
    params = {name: spec["default"] for name, spec in doc["parameters"].items()
              if spec.get("default") is not None}
    return doc, InfraEval(doc, params, {})


def _module(root, main_doc, main_eval, path):
    """(module doc, its evaluator) for main.bicep's declaration of infra/<path>."""
    matches = [d for d in main_doc["modules"].values() if d["detail"]["path"] == path]
    if len(matches) != 1:
        raise Unknown(f"main.bicep declares {path} {len(matches)} times")
    doc = parse_bicep(root / "infra" / path)
    evaluator = None

    def module_eval():
        return evaluator

    evaluator = InfraEval(doc, _Given(main_eval, matches[0]["config"]["params"], doc, module_eval), {})
    return doc, evaluator


def _env(evaluate, container):
    env = evaluate(container.get("env", []))
    for item in env:
        if set(item) != {"name", "value"}:
            raise Unknown(f"env entry {item!r}: only name and value are read")
    return [{"name": item["name"], "value": str(item["value"])} for item in env]


def _the(doc, kind):
    (resource,) = [r for r in doc["resources"].values() if r["type"] == kind and not r.get("existing")]
    return resource["config"]["properties"]


def apps(root, main_doc, main_eval):
    """{service: env} of each app's container."""
    found = {}
    for service, module in sorted(app_modules(root).items()):
        doc, evaluate = _module(root, main_doc, main_eval, f"{module}.bicep")
        (container,) = _the(doc, CONTAINER_APPS)["template"]["containers"]
        found[service] = _env(evaluate.value, container)
    return found


def jobs(root, main_doc, main_eval):
    """{main.bicep module symbol: env} of the bootstrap job's container."""
    doc, evaluate = _module(root, main_doc, main_eval, BOOTSTRAP_MODULE)
    (container,) = _the(doc, JOBS)["template"]["containers"]
    (symbol,) = [s for s, d in main_doc["modules"].items() if d["detail"]["path"] == BOOTSTRAP_MODULE]
    return {symbol: _env(evaluate.value, container)}


def components(root, main_doc, main_eval):
    """{name: Dapr component document} of every component of the environment."""
    doc, evaluate = _module(root, main_doc, main_eval, COMPONENTS_MODULE)
    found = {}
    for resource in doc["resources"].values():
        if resource["type"] != DAPR_COMPONENTS or resource.get("existing"):
            continue
        config = resource["config"]
        props = config["properties"]
        spec = {"type": evaluate.value(props["componentType"]), "version": evaluate.value(props["version"])}
        for optional in ("ignoreErrors", "initTimeout"):
            if optional in props:
                spec[optional] = evaluate.value(props[optional])
        spec["metadata"] = []
        for item in props.get("metadata", []):
            if set(item) != {"name", "value"}:
                raise Unknown(f"metadata entry {item!r}: only name and value are read")
            spec["metadata"].append({"name": item["name"], "value": str(evaluate.value(item["value"]))})
        # A literal: evaluating it would take it for the resource symbol of the same name.
        name = config["name"]
        found[name] = {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": spec,
            "scopes": evaluate.value(props.get("scopes", [])),
        }
    return found


def app_env(root=ROOT):
    main_doc, main_eval = _main(root)
    return {
        "apps": apps(root, main_doc, main_eval),
        "jobs": jobs(root, main_doc, main_eval),
        "components": components(root, main_doc, main_eval),
    }


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    try:
        result = app_env(root)
    except Unknown as error:
        sys.exit(f"app_env.py: cannot read infra/: {error}")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
