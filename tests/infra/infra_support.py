"""Shared helpers for the offline checks of infra/, azure.yaml and components/."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]


def parse_bicep(path):
    """The pycep JSON form of a Bicep file."""
    return BicepParser().parse(file_path=Path(path))


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **kwargs)


def arm_check(infra_dir):
    """Runs the vendored bicep-arm-check on a directory; returns the completed process.
    --strict: a resource whose type and API version have no schema here is an error."""
    return run([
        sys.executable, str(ROOT / "tools/bicep-arm-check/bicep_arm_check.py"),
        "--strict", "--schemas", str(ROOT / "tests/schemas/arm"), str(infra_dir),
    ])


def checkov(infra_dir):
    """Runs checkov with this project's policies and config on a directory."""
    binary = os.environ.get("CHECKOV_BIN")
    if not binary:
        pytest.fail("CHECKOV_BIN is not set: run the tests with scripts/test.sh")
    env = dict(os.environ, CKV_PARSE_ERROR_FAIL="true", BC_SKIP_MAPPING="TRUE")
    return run([
        binary, "--config-file", str(ROOT / "tests/infra/checkov.yaml"),
        "--external-checks-dir", str(ROOT / "tests/infra/checkov"),
        "-d", str(infra_dir),
    ], env=env)




def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# ---- azd's deploy-time Bicep (infra/app/) -------------------------------------------------

AZD_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


def service_variable(service):
    """azd's name of a service in environment variables: order-processor -> ORDER_PROCESSOR."""
    return service.upper().replace("-", "_")


def app_modules(root):
    """{service: module} from azure.yaml: azd deploys infra/<module>.bicep with
    infra/<module>.parameters.json (the module is the service's name unless set)."""
    services = yaml.safe_load((root / "azure.yaml").read_text())["services"]
    return {name: spec.get("module", name) for name, spec in services.items()}


def azd_variables(root):
    """What azd itself puts in the environment that the parameter files may use."""
    names = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"}
    for service in app_modules(root):
        names |= {f"SERVICE_{service_variable(service)}_IMAGE_NAME",
                  f"SERVICE_{service_variable(service)}_RESOURCE_EXISTS"}
    return names


def parameter_values(path):
    """{parameter: value} of an ARM parameters file."""
    return {name: spec.get("value") for name, spec in json.loads(path.read_text())["parameters"].items()}


def canonical(expression):
    """A pycep expression as text that compares equal when the expressions do."""
    return json.dumps(expression, sort_keys=True)


def render(expression):
    """A pycep expression as Bicep-like text, for messages."""
    if isinstance(expression, dict) and "operator" in expression:
        operator = expression["operator"]
        first, rest = operator["operands"].get("operand_1"), operator["operands"].get("operand_2")
        if operator["type"] == "property_accessor":
            return f"{render(first)}.{render(rest)}"
        if operator["type"] == "index_accessor":
            return f"{render(first)}[{render(rest)}]"
    if isinstance(expression, str):
        return expression
    return canonical(expression)


class Unknown(Exception):
    """An expression the evaluator does not know (then the test says which)."""


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class BicepEval:
    """Evaluates the few Bicep expressions an app module computes its image, probes and
    health check with, and the alerts their windows with, as pycep parses them. pycep turns
    a reference and a string literal into the same string: a string is a reference when it
    names a parameter, variable or `existing` resource of the file, else a literal, in
    which `${name}` is interpolated. `existing` maps the symbol of an existing resource to
    its (fake) body; one whose condition is false cannot be read, as in ARM. pycep has no
    operator precedence, so the Bicep it reads puts parentheses around mixed arithmetic."""

    def __init__(self, doc, params, existing):
        self.doc, self.params, self.existing = doc, params, existing
        self.variables = doc.get("variables", {})

    def value(self, node):
        if isinstance(node, str):
            if node in self.params:
                return self.params[node]
            if node in self.variables:
                return self.value(self.variables[node]["value"])
            if node in self.doc.get("resources", {}):
                return self.resource(node)
            return INTERPOLATION.sub(lambda m: str(self.value(m[1])), node)
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if isinstance(node, dict) and "operator" in node:
            return self.operator(node["operator"]["type"], node["operator"]["operands"])
        if isinstance(node, dict) and "function" in node:
            function = node["function"]
            args = [self.value(a) for a in function.get("parameters", {}).values()]
            if function["type"] == "empty" and len(args) == 1:
                return len(args[0]) == 0
            if function["type"] in ("max", "min") and args:
                return (max if function["type"] == "max" else min)(args)
            if function["type"] in ("to_lower", "to_upper") and len(args) == 1 and isinstance(args[0], str):
                return args[0].lower() if function["type"] == "to_lower" else args[0].upper()
            if function["type"] == "replace" and len(args) == 3 and all(isinstance(a, str) for a in args):
                return args[0].replace(args[1], args[2])
            if function["type"] == "string" and len(args) == 1:
                return args[0] if isinstance(args[0], str) else json.dumps(args[0], separators=(",", ":"))
            raise Unknown(f"function {function['type']}()")
        if isinstance(node, dict):
            return {key: self.value(v) for key, v in node.items()}
        return node

    def resource(self, symbol):
        resource = self.doc["resources"][symbol]
        if not resource.get("existing") or symbol not in self.existing:
            raise Unknown(f"resource {symbol} (only existing resources given to the test are read)")
        condition = resource["config"].get("condition")
        if condition is not None and not self.value(condition):
            raise Unknown(f"{symbol} is read while its condition is false: ARM would fail")
        return self.existing[symbol]

    def operator(self, kind, operands):
        if kind == "conditional":
            branch = "true_value" if self.value(operands["condition"]) else "false_value"
            return self.value(operands[branch])
        if kind in ("equals", "not_equals"):
            same = self.value(operands["operand_1"]) == self.value(operands["operand_2"])
            return same if kind == "equals" else not same
        if kind == "and":
            return bool(self.value(operands["operand_1"])) and bool(self.value(operands["operand_2"]))
        if kind == "or":
            return bool(self.value(operands["operand_1"])) or bool(self.value(operands["operand_2"]))
        arithmetic = {"add": lambda a, b: a + b, "multiply": lambda a, b: a * b,
                      "divide": lambda a, b: a // b, "modulo": lambda a, b: a % b}
        if kind in arithmetic:
            first, second = self.value(operands["operand_1"]), self.value(operands["operand_2"])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, second)):
                raise Unknown(f"{kind} of {first!r} and {second!r}")
            return arithmetic[kind](first, second)
        if kind in ("property_accessor", "index_accessor"):
            return self.access(self.value(operands["operand_1"]), {"operator": {"type": kind, "operands": operands}}, top=True)
        raise Unknown(f"operator {kind}")

    def access(self, base, path, top=False):
        """Follows `a.b[0].c` (pycep nests it to the right) from an evaluated base."""
        if isinstance(path, str):
            return base[path]
        operator = path["operator"]
        first, rest = operator["operands"]["operand_1"], operator["operands"]["operand_2"]
        if operator["type"] == "property_accessor":
            here = base if top else self.access(base, first)
            return self.access(here, rest)
        if operator["type"] == "index_accessor":
            here = base if top else self.access(base, first)
            return here[self.value(rest)]
        raise Unknown(f"accessor {operator['type']}")



# ---- What an app revision runs (infra/app/<module>.bicep, evaluated) ------------------------

# mcr.microsoft.com/azuredocs/containerapps-helloworld, the image an app runs until azd
# deploys its own, serves HTTP on port 80 (its Dockerfile's EXPOSE; Container Apps'
# quickstarts give it ingress targetPort 80).
PLACEHOLDER_PORT = 80


def app_revision(root, service, image="", exists=False, running=None):
    """What infra/app/<module>.bicep deploys for `service` when given `image` and `exists`,
    with `running` the image the app runs now ("PLACEHOLDER" for the placeholder, None when
    there is no app): a dict with the image, whether it is the placeholder, the port that
    image listens on, the container's probes, and the Dapr sidecar's settings (None when
    Dapr is off), each evaluated from the Bicep. Raises Unknown (or KeyError, TypeError)
    when the Bicep has something the evaluator cannot read."""
    module = app_modules(root)[service]
    doc = parse_bicep(root / "infra" / f"{module}.bicep")
    placeholder = doc["variables"]["placeholderImage"]["value"]
    running = placeholder if running == "PLACEHOLDER" else running
    apps = {s: r for s, r in doc["resources"].items() if r["type"] == "Microsoft.App/containerApps"}
    (app,) = [r for r in apps.values() if not r.get("existing")]
    current = [s for s, r in apps.items() if r.get("existing")]
    params = {name: f"<{name}>" for name in doc["parameters"]}
    params.update(image=image, exists=exists)
    existing = {s: {"properties": {"template": {"containers": [{"image": running}]}}} for s in current}
    evaluate = BicepEval(doc, params, existing if running else {}).value
    body = app["config"]["properties"]
    container = body["template"]["containers"][0]
    got_image = evaluate(container["image"])
    dapr = body["configuration"]["dapr"]
    sidecar = None
    if evaluate(dapr.get("enabled", False)) is True:
        health = dapr.get("appHealth", {})
        sidecar = {
            "app_id": evaluate(dapr["appId"]),
            "app_port": evaluate(dapr.get("appPort")),
            "app_protocol": evaluate(dapr.get("appProtocol", "http")),
            "app_health": {
                "path": evaluate(health["path"]),
                "interval_seconds": evaluate(health["probeIntervalSeconds"]),
                "timeout_ms": evaluate(health["probeTimeoutMilliseconds"]),
                "threshold": evaluate(health["threshold"]),
            } if evaluate(health.get("enabled", False)) is True else None,
        }
    is_placeholder = got_image == placeholder
    return {
        "image": got_image,
        "placeholder": is_placeholder,
        "listens_on": PLACEHOLDER_PORT if is_placeholder else evaluate(doc["variables"]["port"]["value"]),
        "probes": evaluate(container.get("probes", [])),
        "dapr": sidecar,
    }
