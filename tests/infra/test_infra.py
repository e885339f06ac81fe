"""Offline checks of infra/: Bicep syntax and resource bodies against the ARM schemas of
their API versions (tools/bicep-arm-check, strict: every type and API version must have a
schema here), the parameters file, the region list, and checkov with this project's
policies. Each check is also shown to fail on a broken copy. The apps' own Bicep
(infra/app/) has its checks in test_app_modules.py."""

import json
import re

import pytest

from infra_support import ROOT, arm_check, checkov, parse_bicep, replace_in


def test_every_bicep_file_parses_and_matches_the_arm_schemas():
    result = arm_check(ROOT / "infra")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-2]
    assert " 0 not parsed" in summary and " 0 with no schema here" in summary, summary


def test_an_api_version_without_a_schema_fails_the_check(infra_copy):
    replace_in(infra_copy / "modules/network.bicep", "virtualNetworks@2024-05-01", "virtualNetworks@2099-01-01")
    result = arm_check(infra_copy)
    assert result.returncode == 1
    assert "error: vnet Microsoft.Network/virtualNetworks@2099-01-01: no schema here" in result.stdout, result.stdout


def test_a_misspelt_property_fails_the_schema_check(infra_copy):
    replace_in(infra_copy / "modules/registry.bicep", "adminUserEnabled", "adminUserEnable")
    result = arm_check(infra_copy)
    assert result.returncode == 1
    assert "unknown property 'adminUserEnable'" in result.stdout


def test_a_wrong_enum_value_fails_the_schema_check(infra_copy):
    replace_in(infra_copy / "modules/postgres.bicep", "passwordAuth: 'Disabled'", "passwordAuth: 'Off'")
    result = arm_check(infra_copy)
    assert result.returncode == 1
    assert "passwordAuth" in result.stdout


def test_a_syntax_error_fails_the_parse(infra_copy):
    replace_in(infra_copy / "modules/network.bicep", "resource vnet", "resource vnet vnet")
    result = arm_check(infra_copy)
    assert result.returncode == 1
    assert "parse failed" in result.stdout


def test_every_parameter_in_the_parameters_file_is_declared():
    declared = set(parse_bicep(ROOT / "infra/main.bicep")["parameters"])
    given = set(json.loads((ROOT / "infra/main.parameters.json").read_text())["parameters"])
    assert given <= declared, f"not declared in main.bicep: {sorted(given - declared)}"
    required = {
        name for name, spec in parse_bicep(ROOT / "infra/main.bicep")["parameters"].items()
        if spec.get("default") is None
    }
    assert required <= given, f"required but not given: {sorted(required - given)}"


def test_every_module_file_is_used_by_main():
    main = (ROOT / "infra/main.bicep").read_text()
    used = set(re.findall(r"'((?:modules|app)/[a-z-]+\.bicep)'", main))
    present = {p.relative_to(ROOT / "infra").as_posix() for p in (ROOT / "infra").glob("*/*.bicep")}
    assert present == used, f"unused: {sorted(present - used)}; missing: {sorted(used - present)}"


def region_problems(main_bicep):
    """What is wrong with main.bicep's @allowed list of regions."""
    decorators = parse_bicep(main_bicep)["parameters"]["location"]["decorators"]
    allowed = next((d["argument"] for d in decorators if d["type"] == "allowed"), None)
    if not allowed:
        return ["location has no @allowed list of regions"]
    problems = []
    if allowed != sorted(allowed):
        problems.append("the regions are not sorted")
    if len(set(allowed)) != len(allowed):
        problems.append("a region is listed twice")
    problems += [f"{r!r} is not a programmatic region name" for r in allowed if not re.fullmatch(r"[a-z]+[0-9]*", r)]
    return problems


def test_the_region_list_is_sorted_lowercase_and_unique():
    assert region_problems(ROOT / "infra/main.bicep") == []


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ("  'westus3'\n", "  'westus3'\n  'eastus'\n", "listed twice"),
        ("  'eastus'\n  'eastus2'\n", "  'eastus2'\n  'eastus'\n", "not sorted"),
        ("  'uksouth'\n", "  'UK South'\n", "'UK South' is not"),
    ],
)
def test_a_broken_region_list_is_caught(infra_copy, old, new, complaint):
    replace_in(infra_copy / "main.bicep", old, new)
    assert any(complaint in p for p in region_problems(infra_copy / "main.bicep"))


def test_an_empty_region_list_is_caught(infra_copy):
    text = (infra_copy / "main.bicep").read_text()
    start = text.index("@allowed([\n  'australiaeast'")
    end = text.index("])\n", start) + 3
    (infra_copy / "main.bicep").write_text(text[:start] + text[end:])
    assert region_problems(infra_copy / "main.bicep") == ["location has no @allowed list of regions"]


def database_problems(infra_dir):
    """The orders database is the bootstrap's (created as the Entra administrator, who then
    owns it), not ARM's; require_secure_transport stays."""
    problems = []
    for path in sorted(infra_dir.rglob("*.bicep")):
        for symbol, resource in parse_bicep(path).get("resources", {}).items():
            if resource["type"].lower() == "microsoft.dbforpostgresql/flexibleservers/databases":
                problems.append(f"{path.name}: {symbol} creates a database through ARM")
    configurations = parse_bicep(infra_dir / "modules/postgres.bicep")["resources"]
    tls = [r for r in configurations.values() if r["config"].get("name") == "require_secure_transport"]
    if len(tls) != 1:
        problems.append("postgres.bicep does not set require_secure_transport")
    return problems


def test_the_database_is_not_created_through_arm():
    assert database_problems(ROOT / "infra") == []


def test_a_database_resource_is_caught(infra_copy):
    with open(infra_copy / "modules/postgres.bicep", "a") as bicep:
        bicep.write(
            "\nresource orders 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2025-08-01' = {\n"
            "  parent: server\n  name: 'orders'\n}\n"
        )
    assert database_problems(infra_copy) == ["postgres.bicep: orders creates a database through ARM"]


def test_checkov_passes_with_our_policies():
    result = checkov(ROOT / "infra")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Parsing errors" not in result.stdout


@pytest.mark.parametrize(
    "file, old, new, policy",
    [
        ("modules/postgres.bicep", "passwordAuth: 'Disabled'", "passwordAuth: 'Enabled'", "CKV_DRA_1"),
        ("modules/postgres.bicep", "publicNetworkAccess: 'Disabled'", "publicNetworkAccess: 'Enabled'", "CKV_DRA_2"),
        ("modules/postgres.bicep", "value: 'on'", "value: 'off'", "CKV_DRA_4"),
        ("modules/registry.bicep", "adminUserEnabled: false", "adminUserEnabled: true", "CKV_DRA_5"),
        ("modules/dapr-components.bicep", "scopes: [batchAppId]", "scopes: []", "CKV_DRA_6"),
        ("app/batch.bicep", "minReplicas: 1\n        maxReplicas: 1\n", "minReplicas: 1\n        maxReplicas: 2\n", "CKV_DRA_7"),
        ("modules/alerts.bicep", "    enabled: true\n    scopes: [workspace.id]", "    enabled: false\n    scopes: [workspace.id]",
         "CKV_DRA_9"),
        ("modules/alerts.bicep", "    enabled: true\n    scopes: [postgres.id]", "    enabled: alertEmail != ''\n    scopes: [postgres.id]",
         "CKV_DRA_9"),
        ("modules/alerts.bicep", "      actionGroups: [actionGroup.id]", "      actionGroups: []", "CKV_DRA_9"),
        ("modules/alerts.bicep", "        actionGroupId: actionGroup.id", "        actionGroupId: actionGroupName", "CKV_DRA_9"),
        ("modules/alerts.bicep", "    groupShortName: 'orders'\n    enabled: true", "    groupShortName: 'orders'\n    enabled: false",
         "CKV_DRA_10"),
    ],
)
def test_checkov_fails_a_broken_copy(infra_copy, file, old, new, policy):
    replace_in(infra_copy / file, old, new)
    result = checkov(infra_copy)
    assert result.returncode != 0
    assert policy in result.stdout, result.stdout


def test_checkov_fails_an_open_firewall(infra_copy):
    with open(infra_copy / "modules/postgres.bicep", "a") as bicep:
        bicep.write(
            "\nresource open 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2025-08-01' = {\n"
            "  parent: server\n  name: 'all'\n"
            "  properties: {\n    startIpAddress: '0.0.0.0'\n    endIpAddress: '255.255.255.255'\n  }\n}\n"
        )
    result = checkov(infra_copy)
    assert result.returncode != 0
    assert "CKV_DRA_3" in result.stdout, result.stdout


def test_checkov_fails_on_a_file_it_cannot_parse(infra_copy):
    replace_in(infra_copy / "modules/network.bicep", "resource vnet", "resource vnet vnet")
    assert checkov(infra_copy).returncode != 0


def test_the_batch_policy_finds_the_batch_app():
    # CKV_DRA_7 recognises the batch app by its literal Dapr app id; a reference would
    # make it pass silently (the contract test also requires the literal).
    app = parse_bicep(ROOT / "infra/app/batch.bicep")["resources"]["app"]["config"]
    assert app["properties"]["configuration"]["dapr"]["appId"] == "batch"
    doc = parse_bicep(ROOT / "infra/app/batch.bicep")
    assert "batch" not in {**doc.get("variables", {}), **doc["parameters"]}
