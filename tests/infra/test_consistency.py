"""The contract between components/, infra/ and the code (tests/infra/contract.yaml):
the same Dapr components, scopes, resiliency settings and app ids everywhere."""

import re
import shutil

import pytest
import yaml

from infra_support import INTERPOLATION, ROOT, parse_bicep

CONTRACT = yaml.safe_load((ROOT / "tests/infra/contract.yaml").read_text())["must_agree"]


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert match, f"unsupported duration {text!r}"
    value, unit = int(match[1]), match[2]
    return {"ms": value / 1000, "s": value, "m": value * 60}[unit]


class Infra:
    """Dapr components and app ids as infra/ declares them, references resolved."""

    def __init__(self, root):
        main = parse_bicep(root / "infra/main.bicep")
        module = parse_bicep(root / "infra/modules/dapr-components.bicep")
        variables = {name: spec["value"] for name, spec in main.get("variables", {}).items()}
        module_params = main["modules"]["daprComponents"]["config"]["params"]
        defaults = {name: spec["default"] for name, spec in main["parameters"].items() if "default" in spec}
        # dapr-components.bicep parameter -> main.bicep variable -> literal
        self.resolve = lambda name: variables.get(module_params.get(name, name), name)

        def interpolate(value):
            """A metadata value with `${parameter}` of dapr-components.bicep, as main.bicep
            deploys it: the parameter is what main.bicep passes, a variable or a parameter
            left at its default."""
            def one(match):
                given = module_params.get(match[1])
                if not isinstance(given, str):
                    return match[0]
                if given in variables:
                    return str(variables[given])
                if given in defaults:
                    return str(defaults[given])
                return match[0]
            return INTERPOLATION.sub(one, value) if isinstance(value, str) else value
        self.variables = variables
        self.main = main
        self.components = {}
        self.resiliency = {}
        resources = module["resources"]
        for symbol, resource in resources.items():
            config = resource["config"]
            if resource["type"].endswith("/daprComponents"):
                props = config["properties"]
                self.components[config["name"]] = {
                    "type": props["componentType"],
                    "version": props["version"],
                    "scopes": [self.resolve(s) for s in props.get("scopes", [])],
                    "ignoreErrors": props.get("ignoreErrors", False),
                    "initTimeout": props.get("initTimeout"),
                    "metadata": {m["name"]: interpolate(m.get("value")) for m in props.get("metadata", [])},
                    "symbol": symbol,
                }
        for resource in resources.values():
            if resource["type"].endswith("/resiliencyPolicies"):
                parent = resources[resource["config"]["parent"]]["config"]["name"]
                self.resiliency[parent] = resource["config"]["properties"]


class Local:
    """components/ as daprd loads it."""

    def __init__(self, root):
        self.components = {}
        self.resiliency = None
        for path in sorted((root / "components").glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            if doc["kind"] == "Component":
                spec = doc["spec"]
                self.components[doc["metadata"]["name"]] = {
                    "file": f"components/{path.name}",
                    "type": spec["type"],
                    "version": spec["version"],
                    "scopes": doc.get("scopes", []),
                    "ignoreErrors": spec.get("ignoreErrors", False),
                    "initTimeout": spec.get("initTimeout"),
                    "metadata": {m["name"]: m.get("value") for m in spec.get("metadata", [])},
                }
            elif doc["kind"] == "Resiliency":
                self.resiliency = doc


def local_resiliency(local, component):
    spec = local.resiliency["spec"]
    outbound = spec["targets"]["components"][component]["outbound"]
    retry = spec["policies"]["retries"][outbound["retry"]]
    breaker = spec["policies"]["circuitBreakers"][outbound["circuitBreaker"]]
    trip = re.fullmatch(r"consecutiveFailures\s*(>=|>)\s*(\d+)", breaker["trip"])
    assert trip, f"unsupported trip expression {breaker['trip']!r}"
    failures = int(trip[2]) + (1 if trip[1] == ">" else 0)
    assert retry["policy"] == "exponential", "Container Apps retries with exponential back-off"
    return {
        "timeout": duration_seconds(spec["policies"]["timeouts"][outbound["timeout"]]),
        "maxRetries": retry["maxRetries"],
        # Dapr's exponential policy starts at 500 ms (dapr/kit retry defaults).
        "initialInterval": duration_seconds(retry.get("initialInterval", "500ms")) * 1000,
        "maxInterval": duration_seconds(retry["maxInterval"]) * 1000,
        "consecutiveFailures": failures,
        "breakerTimeout": duration_seconds(breaker["timeout"]),
        "breakerInterval": duration_seconds(breaker["interval"]),
    }


def lookup(tree, path):
    for key in path.split("."):
        tree = tree[key]
    return tree


def check_contract(root):
    """Every disagreement between the three, as sentences."""
    problems = []
    infra, local = Infra(root), Local(root)
    for name, rule in CONTRACT["components"].items():
        mine, theirs = local.components.get(name), infra.components.get(name)
        if mine is None or theirs is None:
            problems.append(f"component {name}: missing in {'components/' if mine is None else 'infra/'}")
            continue
        if mine["file"] != rule["file"]:
            problems.append(f"component {name}: expected in {rule['file']}, found in {mine['file']}")
        for field in CONTRACT["component_fields"]:
            if mine[field] != theirs[field]:
                problems.append(f"component {name}: {field} {mine[field]!r} locally, {theirs[field]!r} in infra/")
        for key in rule["metadata"]:
            if mine["metadata"].get(key) != theirs["metadata"].get(key):
                problems.append(
                    f"component {name}: metadata {key} {mine['metadata'].get(key)!r} locally, "
                    f"{theirs['metadata'].get(key)!r} in infra/"
                )
    for extra in sorted(set(local.components) ^ set(infra.components)):
        if extra not in CONTRACT["components"]:
            problems.append(f"component {extra}: not in the contract (tests/infra/contract.yaml)")

    for name, fields in CONTRACT["resiliency"].items():
        if name not in infra.resiliency:
            problems.append(f"resiliency of {name}: missing in infra/")
            continue
        want = local_resiliency(local, name)
        for field, path in fields.items():
            got = lookup(infra.resiliency[name], path)
            if got != want[field]:
                problems.append(f"resiliency of {name}: {field} {want[field]!r} locally, {got!r} in infra/ ({path})")

    for app_id, rule in CONTRACT["app_ids"].items():
        if infra.variables.get(rule["variable"]) != app_id:
            problems.append(f"app id {app_id}: main.bicep's {rule['variable']} is {infra.variables.get(rule['variable'])!r}")
        app = parse_bicep(root / rule["app"])
        names = set(app["parameters"]) | set(app.get("variables", {}))
        for resource in app["resources"].values():
            if resource["type"] == "Microsoft.App/containerApps" and not resource.get("existing"):
                got = resource["config"]["properties"]["configuration"]["dapr"]["appId"]
                if got != app_id or got in names:  # a reference would look like a literal
                    problems.append(f"app id {app_id}: {rule['app']} sets dapr.appId {got!r}, not the literal {app_id!r}")
    scoped = {scope for c in local.components.values() for scope in c["scopes"]}
    for scope in scoped - set(CONTRACT["app_ids"]):
        problems.append(f"components/ scopes an unknown app id {scope!r}")

    for rule in CONTRACT["code"]:
        source = (root / rule["file"]).read_text()
        match = re.search(rf'const {rule["constant"]}: &str = "([^"]*)";', source)
        if not match:
            problems.append(f"{rule['file']}: constant {rule['constant']} not found")
            continue
        kind, expected = rule["equals"].split(" ", 1)
        if kind == "component" and expected not in local.components:
            problems.append(f"{rule['file']}: {rule['constant']} refers to unknown component {expected}")
        if match[1] != expected:
            problems.append(f"{rule['file']}: {rule['constant']} is {match[1]!r}, the contract says {expected!r}")
    return problems


def test_components_infra_and_code_agree():
    assert check_contract(ROOT) == []


@pytest.fixture
def tree(tmp_path):
    """A scratch copy of what the contract reads."""
    for part in ("components", "infra", "src/batch/src", "src/order-processor/src"):
        shutil.copytree(ROOT / part, tmp_path / part)
    return tmp_path


@pytest.mark.parametrize(
    "file, old, new, complaint",
    [
        ("components/cron.yaml", "@every 10s", "@every 20s", "component cron: metadata schedule"),
        ("infra/main.bicep", "param cronPeriodSeconds int = 10", "param cronPeriodSeconds int = 20",
         "component cron: metadata schedule '@every 10s' locally, '@every 20s' in infra/"),
        ("infra/main.bicep", "    cronPeriodSeconds: cronPeriodSeconds\n  }\n}\n", "    cronPeriodSeconds: 20\n  }\n}\n",
         "'@every ${cronPeriodSeconds}s' in infra/"),
        ("infra/modules/dapr-components.bicep", "scopes: [orderProcessorAppId]", "scopes: [batchAppId]", "component sqldb: scopes"),
        ("infra/modules/dapr-components.bicep", "'bindings.postgresql'", "'bindings.postgres'", "component sqldb: type"),
        ("infra/modules/dapr-components.bicep", "ignoreErrors: true", "ignoreErrors: false", "component sqldb: ignoreErrors"),
        ("components/sqldb.yaml", "  ignoreErrors: true\n", "", "component sqldb: ignoreErrors"),
        ("components/sqldb.yaml", "  version: v1", "  version: v2", "component sqldb: version"),
        ("components/sqldb.yaml", "  initTimeout: 20s\n", "", "component sqldb: initTimeout"),
        ("infra/modules/dapr-components.bicep", "initTimeout: '20s'", "initTimeout: '5s'", "component sqldb: initTimeout"),
        ("components/resiliency.yaml", "maxRetries: 2", "maxRetries: 5", "maxRetries"),
        ("components/resiliency.yaml", "consecutiveFailures >= 5", "consecutiveFailures > 5", "consecutiveFailures"),
        ("infra/modules/dapr-components.bicep", "responseTimeoutInSeconds: 5", "responseTimeoutInSeconds: 30", "timeout"),
        ("infra/main.bicep", "var batchAppId = 'batch'", "var batchAppId = 'batcher'", "app id batch"),
        ("infra/app/order-processor.bicep", "appId: 'order-processor'", "appId: 'orders'", "app id order-processor: infra/app"),
        ("infra/app/batch.bicep", "appId: 'batch'", "appId: 'batcher'", "app id batch: infra/app"),
        ("src/batch/src/config.rs", 'DEFAULT_CRON_BINDING: &str = "cron"', 'DEFAULT_CRON_BINDING: &str = "tick"', "DEFAULT_CRON_BINDING"),
        ("infra/modules/dapr-components.bicep", "name: 'cron'", "name: 'cron2'", "component cron"),
    ],
)
def test_a_broken_copy_breaks_the_contract(tree, file, old, new, complaint):
    path = tree / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    problems = check_contract(tree)
    assert any(complaint in p for p in problems), problems


def test_connection_metadata_may_differ():
    infra, local = Infra(ROOT), Local(ROOT)
    assert "useAzureAD" in infra.components["sqldb"]["metadata"]
    assert "useAzureAD" not in local.components["sqldb"]["metadata"]


def test_timeouts_nest_from_the_sidecars_policy_to_batch(root=ROOT):
    """daprd's whole retry policy for the binding ends before order-processor gives up on
    the call (BINDING_TIMEOUT_SECS), which ends before batch gives up on order-processor
    (INVOKE_TIMEOUT_SECS, checked at batch's start-up): nobody sends again what is still
    being written."""
    policy = local_resiliency(Local(root), "sqldb")
    tries = policy["maxRetries"] + 1
    # Each back-off is at most maxInterval (Dapr caps the randomised exponential delay).
    worst = tries * policy["timeout"] + policy["maxRetries"] * policy["maxInterval"] / 1000
    common = (root / "src/common/src/config.rs").read_text()
    binding = int(re.search(r"DEFAULT_BINDING_TIMEOUT_SECS: u64 = (\d+);", common)[1])
    batch = (root / "src/batch/src/config.rs").read_text()
    margin = int(re.search(r"INVOKE_MARGIN_SECS: u64 = (\d+);", batch)[1])
    assert worst < binding, f"the sidecar may retry for {worst} s, order-processor waits {binding} s"
    assert binding + margin <= 30, "batch's default INVOKE_TIMEOUT_SECS (30) must nest too"
    for app in ("infra/app/batch.bicep", "infra/app/order-processor.bicep", "infra/main.bicep"):
        text = (root / app).read_text()
        for name in ("BINDING_TIMEOUT_SECS", "INVOKE_TIMEOUT_SECS"):
            assert name not in text, f"{app} sets {name}: check that the timeouts still nest"
