"""Offline checks of infra/: Bicep syntax and resource bodies against the ARM schemas of
their API versions (tools/bicep-arm-check), the parameters file, and checkov with this
project's policies. Each check is also shown to fail on a broken copy."""

import json
import re

import pytest

from infra_support import ROOT, arm_check, checkov, parse_bicep, replace_in


def test_every_bicep_file_parses_and_matches_the_arm_schemas():
    result = arm_check(ROOT / "infra")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-2]
    assert " 0 not parsed" in summary, summary


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
    used = set(re.findall(r"'(modules/[a-z-]+\.bicep)'", main))
    present = {f"modules/{p.name}" for p in (ROOT / "infra/modules").glob("*.bicep")}
    assert present == used, f"unused: {sorted(present - used)}; missing: {sorted(used - present)}"


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
        ("modules/environment.bicep", "scopes: [batchAppId]", "scopes: []", "CKV_DRA_6"),
        ("main.bicep", "    minReplicas: 1\n    maxReplicas: 1\n", "    minReplicas: 1\n    maxReplicas: 2\n", "CKV_DRA_7"),
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


def test_the_batch_policy_finds_the_batch_app_by_its_app_id_variable():
    # CKV_DRA_7 recognises the batch module by `daprAppId: batchAppId`.
    batch = parse_bicep(ROOT / "infra/main.bicep")["modules"]["batch"]["config"]["params"]
    assert batch["daprAppId"] == "batchAppId"
