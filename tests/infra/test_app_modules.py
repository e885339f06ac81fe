"""The apps' own Bicep (infra/app/): one definition of each container app, which main.bicep
provisions as a module and `azd deploy` deploys again with the image it has just pushed
(azd's deploy-time Bicep: azure.yaml `module`, infra/<module>.bicep +
infra/<module>.parameters.json, whose ${VAR}s azd fills from its environment). Each check
is also shown to fail on a broken copy."""

import json
import shutil

import jsonschema
import pytest

from infra_support import (
    ROOT, AZD_VARIABLE, Unknown, app_modules, app_revision, azd_variables, canonical,
    parameter_values, parse_bicep, render, replace_in, service_variable,
)

CONTAINER_APPS = "Microsoft.App/containerApps"


def main_module_for(main, module):
    """main.bicep's module declaration that uses infra/<module>.bicep, or None."""
    for symbol, declaration in main["modules"].items():
        if declaration["detail"]["path"] == f"{module}.bicep":
            return symbol, declaration
    return None, None


def check_files(root):
    """Each service has its deploy-time Bicep, and main.bicep provisions the same file."""
    problems = []
    main = parse_bicep(root / "infra/main.bicep")
    for service, module in app_modules(root).items():
        for suffix in (".bicep", ".parameters.json"):
            if not (root / "infra" / f"{module}{suffix}").is_file():
                problems.append(f"{service}: infra/{module}{suffix} is missing (azure.yaml module: {module})")
        if main_module_for(main, module)[0] is None:
            problems.append(f"{service}: main.bicep does not provision infra/{module}.bicep")
    return problems


def check_parameter_files(root):
    """Each app parameters file is an ARM parameters file (the schema its $schema names)."""
    schema = json.loads((ROOT / "tests/schemas/arm/deploymentParameters.json").read_text())
    problems = []
    for service, module in app_modules(root).items():
        document = json.loads((root / "infra" / f"{module}.parameters.json").read_text())
        for error in jsonschema.Draft4Validator(schema).iter_errors(document):
            problems.append(f"{service}: {module}.parameters.json: {error.message}")
    return problems


def check_variables(root):
    """Every ${VAR} of an app parameters file is a main.bicep output or set by azd, and a
    service's image variable is its own."""
    problems = []
    outputs = set(parse_bicep(root / "infra/main.bicep")["outputs"])
    known = outputs | azd_variables(root)
    for service, module in app_modules(root).items():
        text = (root / "infra" / f"{module}.parameters.json").read_text()
        for name in AZD_VARIABLE.findall(text):
            if name not in known:
                problems.append(f"{service}: ${{{name}}} is neither a main.bicep output nor set by azd")
            elif name.endswith("_IMAGE_NAME") and name != f"SERVICE_{service_variable(service)}_IMAGE_NAME":
                problems.append(f"{service}: ${{{name}}} is another service's image")
    return problems


def check_parameters(root):
    """Both ways of deploying an app give every required parameter and only declared ones."""
    problems = []
    main = parse_bicep(root / "infra/main.bicep")
    for service, module in app_modules(root).items():
        declared = parse_bicep(root / "infra" / f"{module}.bicep")["parameters"]
        required = {name for name, spec in declared.items() if spec.get("default") is None}
        given = {
            f"{module}.parameters.json": set(parameter_values(root / "infra" / f"{module}.parameters.json")),
        }
        symbol, declaration = main_module_for(main, module)
        if declaration is not None:
            given[f"main.bicep module {symbol}"] = set(declaration["config"]["params"])
        for where, names in given.items():
            for name in sorted(required - names):
                problems.append(f"{service}: {where} does not give the required parameter {name}")
            for name in sorted(names - set(declared)):
                problems.append(f"{service}: {where} gives {name}, which {module}.bicep does not declare")
    return problems


def check_same_values(root):
    """Deploy passes each parameter the value provision passes: a ${VAR} that is a
    main.bicep output must be the very expression main.bicep gives that parameter (an azd
    variable, through the main parameter infra/main.parameters.json fills with it). The
    image is for deploy only: provision keeps the image an app runs."""
    problems = []
    main = parse_bicep(root / "infra/main.bicep")
    outputs = {name: spec["value"] for name, spec in main["outputs"].items()}
    from_azd = {
        match[0]: name
        for name, value in parameter_values(root / "infra/main.parameters.json").items()
        if isinstance(value, str) and (match := AZD_VARIABLE.findall(value))
    }
    for service, module in app_modules(root).items():
        declared = parse_bicep(root / "infra" / f"{module}.bicep")["parameters"]
        symbol, declaration = main_module_for(main, module)
        passed = declaration["config"]["params"] if declaration else {}
        image = f"SERVICE_{service_variable(service)}_IMAGE_NAME"
        for name, value in parameter_values(root / "infra" / f"{module}.parameters.json").items():
            variables = AZD_VARIABLE.findall(value) if isinstance(value, str) else []
            if not variables:
                if declared.get(name, {}).get("default") is None:
                    problems.append(f"{service}: {name} is a fixed value on deploy but has no default for provision")
                continue
            (variable,) = variables
            if variable == image:
                if name in passed:
                    problems.append(f"{service}: main.bicep passes {name}, the deploy-only image parameter")
                continue
            expected = outputs.get(variable, from_azd.get(variable))
            if expected is None or name not in passed:
                problems.append(f"{service}: {name} (${{{variable}}}) has no counterpart in main.bicep")
            elif canonical(expected) != canonical(passed[name]):
                problems.append(
                    f"{service}: {name} is ${{{variable}}} on deploy but main.bicep passes "
                    f"{render(passed[name])} on provision, not {render(expected)}"
                )
    return problems


def check_outputs(root):
    """azd writes a deploy's outputs into its environment: an app module may only output
    what already means the same there."""
    problems = []
    known = set(parse_bicep(root / "infra/main.bicep")["outputs"]) | azd_variables(root)
    for service, module in app_modules(root).items():
        for name in parse_bicep(root / "infra" / f"{module}.bicep").get("outputs", {}):
            if name not in known:
                problems.append(f"{service}: output {name} would land in the azd environment as a new variable")
    return problems


def check_one_app(root):
    """azd takes the deployed app from the deployment's resources (the first container
    app or job): an app module deploys its container app and nothing else, tagged with
    its service's name."""
    problems = []
    for service, module in app_modules(root).items():
        doc = parse_bicep(root / "infra" / f"{module}.bicep")
        deployed = {s: r for s, r in doc.get("resources", {}).items() if not r.get("existing")}
        if doc.get("modules"):
            problems.append(f"{service}: {module}.bicep uses modules: {sorted(doc['modules'])}")
        if [r["type"] for r in deployed.values()] != [CONTAINER_APPS]:
            problems.append(f"{service}: {module}.bicep deploys {sorted(r['type'] for r in deployed.values())}, "
                            f"not one {CONTAINER_APPS}")
            continue
        (app,) = deployed.values()
        tag = app["config"].get("tags", {}).get("'azd-service-name'")
        if tag != service:
            problems.append(f"{service}: the app's azd-service-name tag is {tag!r}")
    return problems


SCENARIOS = [
    # (image parameter, exists, the image the app runs now or None, a real image expected)
    ("", False, None, False),  # first provision
    ("", True, "PLACEHOLDER", False),  # re-provision after a failed first deploy
    ("", True, "crexample.azurecr.io/app:azd-1", True),  # re-provision after a deploy
    ("crexample.azurecr.io/app:azd-2", False, None, True),  # deploy
    ("crexample.azurecr.io/app:azd-2", True, "PLACEHOLDER", True),  # deploy after a failed one
]


def check_health_follows_image(root):
    """Dapr, probes and Dapr's app health check are on exactly when the app runs its own
    image, not the placeholder (which listens elsewhere), whatever `exists` says."""
    problems = []
    for service in app_modules(root):
        for image, exists, running, real in SCENARIOS:
            case = f"{service} (image {image!r}, exists {exists}, running {running!r})"
            try:
                revision = app_revision(root, service, image, exists, running)
            except (Unknown, KeyError, TypeError) as error:
                problems.append(f"{case}: cannot evaluate: {error}")
                continue
            want_image = image or (running if running != "PLACEHOLDER" else None)
            if want_image and revision["image"] != want_image or not want_image and not revision["placeholder"]:
                problems.append(f"{case}: runs {revision['image']!r}, expected {want_image or 'the placeholder'!r}")
            probes, dapr = revision["probes"], revision["dapr"]
            health = dapr is not None and dapr["app_health"] is not None
            if bool(probes) != real or health != real or (dapr is not None) != real:
                problems.append(f"{case}: Dapr {'on' if dapr else 'off'}, probes {'on' if probes else 'off'}, "
                                f"appHealth {'on' if health else 'off'}; expected all {'on' if real else 'off'}")
            if real and sorted(p.get("type") for p in probes) != ["Liveness", "Readiness"]:
                problems.append(f"{case}: probes {probes!r}")
    return problems


def check_no_sidecar_waits_in_vain(root):
    """Issue 16: a Dapr sidecar waits until something listens on its appPort and is
    unhealthy until then, so in every case an app has a sidecar, that sidecar's appPort is
    the port its image listens on (the placeholder's 80, or the app's own port), and the
    app health check and the probes ask only the app's own image."""
    problems = []
    for service in app_modules(root):
        for image, exists, running, _ in SCENARIOS:
            case = f"{service} (image {image!r}, exists {exists}, running {running!r})"
            try:
                revision = app_revision(root, service, image, exists, running)
            except (Unknown, KeyError, TypeError) as error:
                problems.append(f"{case}: cannot evaluate: {error}")
                continue
            what = "the placeholder" if revision["placeholder"] else "the app"
            dapr = revision["dapr"]
            if dapr is not None and dapr["app_port"] != revision["listens_on"]:
                problems.append(f"{case}: the sidecar waits on port {dapr['app_port']}, where nothing listens "
                                f"({what} listens on {revision['listens_on']})")
            if revision["placeholder"] and (revision["probes"] or dapr is not None and dapr["app_health"]):
                problems.append(f"{case}: probes or an app health check ask the placeholder for /healthz")
            for probe in revision["probes"]:
                if probe.get("httpGet", {}).get("port") != revision["listens_on"]:
                    problems.append(f"{case}: a {probe.get('type')} probe asks port {probe.get('httpGet', {}).get('port')}")
    return problems


def check_components_first(root):
    """The apps wait for the Dapr components (so no sidecar starts without them); the
    environment no longer needs PostgreSQL."""
    problems = []
    main = parse_bicep(root / "infra/main.bicep")
    for service, module in app_modules(root).items():
        symbol, declaration = main_module_for(main, module)
        if declaration is not None and "daprComponents" not in declaration["config"].get("dependsOn", []):
            problems.append(f"{service}: main.bicep module {symbol} does not depend on daprComponents")
    environment = parse_bicep(root / "infra/modules/environment.bicep")["parameters"]
    for name in environment:
        if "postgres" in name.lower() or "database" in name.lower():
            problems.append(f"environment.bicep takes {name}: the environment should not wait for PostgreSQL")
    return problems


CHECKS = [check_files, check_parameter_files, check_variables, check_parameters, check_same_values, check_outputs,
          check_one_app, check_health_follows_image, check_no_sidecar_waits_in_vain, check_components_first]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_app_modules_pass(check):
    assert check(ROOT) == []


@pytest.fixture
def tree(tmp_path):
    """A scratch copy of azure.yaml and infra/."""
    shutil.copy(ROOT / "azure.yaml", tmp_path / "azure.yaml")
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    return tmp_path


@pytest.mark.parametrize(
    "check, file, old, new, complaint",
    [
        (check_files, "azure.yaml", "module: app/batch", "module: app/batcher", "infra/app/batcher.bicep is missing"),
        (check_files, "infra/main.bicep", "module batch 'app/batch.bicep'", "module batch 'app/order-processor.bicep'",
         "main.bicep does not provision infra/app/batch.bicep"),
        (check_parameter_files, "infra/app/batch.parameters.json", '"value": "${AZURE_ENV_NAME}"',
         '"values": "${AZURE_ENV_NAME}"', "'values' was unexpected"),
        (check_variables, "infra/app/batch.parameters.json", "${AZURE_CONTAINER_REGISTRY_NAME}", "${ACR_NAME}",
         "${ACR_NAME} is neither"),
        (check_variables, "infra/main.bicep", "output AZURE_PULL_IDENTITY_NAME", "output PULL_IDENTITY",
         "${AZURE_PULL_IDENTITY_NAME} is neither"),
        (check_variables, "infra/app/batch.parameters.json", "${SERVICE_BATCH_IMAGE_NAME}",
         "${SERVICE_ORDER_PROCESSOR_IMAGE_NAME}", "another service's image"),
        (check_parameters, "infra/app/order-processor.parameters.json", '"postgresServerName"', '"postgresServer"',
         "does not give the required parameter postgresServerName"),
        (check_parameters, "infra/main.bicep", "    dataIdentityName: identities.outputs.dataName\n    postgresServerName",
         "    postgresServerName", "module orderProcessor does not give the required parameter dataIdentityName"),
        (check_same_values, "infra/app/order-processor.parameters.json", "${POSTGRES_SERVER_NAME}",
         "${AZURE_CONTAINER_REGISTRY_NAME}", "postgresServerName is ${AZURE_CONTAINER_REGISTRY_NAME} on deploy"),
        (check_same_values, "infra/main.bicep", "output SERVICE_BATCH_NAME string = batchName",
         "output SERVICE_BATCH_NAME string = orderProcessorName", "name is ${SERVICE_BATCH_NAME} on deploy"),
        (check_same_values, "infra/main.bicep", "    exists: batchExists\n", "    exists: batchExists\n    image: ''\n",
         "main.bicep passes image"),
        (check_outputs, "infra/app/batch.bicep", "resource app ", "output image string = effectiveImage\n\nresource app ",
         "output image would land"),
        (check_one_app, "infra/app/batch.bicep", "'azd-service-name': 'batch'", "'azd-service-name': 'cron'",
         "azd-service-name tag is 'cron'"),
        (check_health_follows_image, "infra/app/batch.bicep", "probes: runsAppImage ? probes : []",
         "probes: exists ? probes : []", "running 'PLACEHOLDER'): Dapr off, probes on"),
        (check_health_follows_image, "infra/app/order-processor.bicep", "enabled: runsAppImage\n          path",
         "enabled: false\n          path", "Dapr on, probes on, appHealth off; expected all on"),
        (check_health_follows_image, "infra/app/batch.bicep", "enabled: runsAppImage\n        appId",
         "enabled: true\n        appId", "Dapr on, probes off, appHealth off; expected all off"),
        (check_no_sidecar_waits_in_vain, "infra/app/batch.bicep", "enabled: runsAppImage\n        appId",
         "enabled: true\n        appId", "the sidecar waits on port 6002, where nothing listens (the placeholder listens on 80)"),
        (check_no_sidecar_waits_in_vain, "infra/app/order-processor.bicep", "enabled: runsAppImage\n        appId",
         "enabled: exists\n        appId", "running 'PLACEHOLDER'): the sidecar waits on port 6001"),
        (check_no_sidecar_waits_in_vain, "infra/app/order-processor.bicep", "        appPort: port\n",
         "        appPort: 6011\n", "running None): the sidecar waits on port 6011, where nothing listens (the app"),
        (check_no_sidecar_waits_in_vain, "infra/app/batch.bicep", "probes: runsAppImage ? probes : []",
         "probes: probes", "probes or an app health check ask the placeholder"),
        (check_no_sidecar_waits_in_vain, "infra/app/batch.bicep", "probes: runsAppImage ? probes : []",
         "probes: probes", "running None): a Liveness probe asks port 6002"),
        (check_health_follows_image, "infra/app/order-processor.bicep", "if (exists && empty(image))",
         "if (exists && empty(name))", "read while its condition is false"),
        (check_components_first, "infra/main.bicep", "    exists: batchExists\n  }\n  dependsOn: [daprComponents]\n",
         "    exists: batchExists\n  }\n", "module batch does not depend on daprComponents"),
    ],
)
def test_a_broken_copy_is_caught(tree, check, file, old, new, complaint):
    replace_in(tree / file, old, new)
    problems = check(tree)
    assert any(complaint in p for p in problems), problems
