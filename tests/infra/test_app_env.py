"""tests/infra/app_env.py, which the Azure-mode tests of tests/testkit run to start the
apps, their sidecar and the bootstrap as infra/ would: it reads every variable and every
component field from the Bicep, leaves what only Azure knows as placeholders, follows a
change of the Bicep, and fails on a reference it cannot read rather than guess."""

import json
import shutil
import subprocess
import sys

import pytest

from app_env import app_env
from infra_support import ROOT, parse_bicep, replace_in


@pytest.fixture
def tree(tmp_path):
    """A scratch copy of what the script reads."""
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    shutil.copy(ROOT / "azure.yaml", tmp_path / "azure.yaml")
    return tmp_path


def env(pairs):
    return {item["name"]: item["value"] for item in pairs}


def test_every_variable_of_each_container_is_read_from_the_bicep():
    found = app_env(ROOT)
    for service, module in (("batch", "app/batch"), ("order-processor", "app/order-processor")):
        doc = parse_bicep(ROOT / "infra" / f"{module}.bicep")
        (app,) = [r for r in doc["resources"].values()
                  if r["type"] == "Microsoft.App/containerApps" and not r.get("existing")]
        declared = [e["name"] for e in app["config"]["properties"]["template"]["containers"][0]["env"]]
        assert [e["name"] for e in found["apps"][service]] == declared
    main = parse_bicep(ROOT / "infra/main.bicep")
    declared = [e["name"] for e in main["modules"]["bootstrap"]["config"]["params"]["env"]]
    assert [e["name"] for e in found["jobs"]["bootstrap"]] == [*declared, "RUST_LOG"]


def test_what_only_azure_knows_is_left_as_placeholders():
    found = app_env(ROOT)
    op = env(found["apps"]["order-processor"])
    assert op["DB_HOST"] == "{postgres.name.properties.fullyQualifiedDomainName}"
    assert op["DB_USER"] == "{identities.dataName}"
    assert op["AZURE_CLIENT_ID"] == "{identities.dataName.properties.clientId}"
    assert op["DB_NAME"] == "orders", "main.bicep's variable, passed to the module"
    job = env(found["jobs"]["bootstrap"])
    assert job["AZURE_CLIENT_ID"] == "{identities.adminClientId}"
    assert job["APP_ROLE_OBJECT_ID"] == "{identities.dataPrincipalId}"


def test_the_binding_is_the_components_module_s_own():
    sqldb = app_env(ROOT)["components"]["sqldb"]
    assert sqldb["kind"] == "Component" and sqldb["metadata"] == {"name": "sqldb"}
    assert sqldb["scopes"] == ["order-processor"]
    spec = sqldb["spec"]
    assert spec["type"] == "bindings.postgresql" and spec["ignoreErrors"] is True
    assert spec["initTimeout"].endswith("s")
    metadata = env(spec["metadata"])
    assert metadata["useAzureAD"] == "true"
    assert metadata["azureClientId"] == "{identities.dataClientId}"
    assert metadata["connectionString"] == (
        "host={postgres.host} port=5432 dbname=orders user={identities.dataName} sslmode=verify-full"
    )


def test_the_script_prints_it_as_json():
    result = subprocess.run([sys.executable, str(ROOT / "tests/infra/app_env.py")],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == app_env(ROOT)


def test_a_change_of_the_bicep_is_followed(tree):
    replace_in(tree / "infra/main.bicep", "dataIdentityClientId: identities.outputs.dataClientId",
               "dataIdentityClientId: identities.outputs.adminClientId")
    replace_in(tree / "infra/main.bicep", "{ name: 'AZURE_CLIENT_ID', value: identities.outputs.adminClientId }", "")
    found = app_env(tree)
    assert env(found["components"]["sqldb"]["spec"]["metadata"])["azureClientId"] == "{identities.adminClientId}"
    assert "AZURE_CLIENT_ID" not in env(found["jobs"]["bootstrap"])


@pytest.mark.parametrize("old, new, complaint", [
    ("{ name: 'DB_STARTUP_TIMEOUT_SECS', value: '900' }",
     "{ name: 'DB_STARTUP_TIMEOUT_SECS', value: uniqueString(name) }", "function"),
    ("{ name: 'DB_NAME', value: databaseName }", "{ name: 'DB_NAME', secretRef: 'db-name' }", "only name and value"),
])
def test_a_reference_it_cannot_read_fails_by_name(tree, old, new, complaint):
    path = tree / "infra/app/order-processor.bicep"
    if old not in path.read_text():
        pytest.fail(f"{old!r} not in order-processor.bicep")
    replace_in(path, old, new)
    result = subprocess.run([sys.executable, str(ROOT / "tests/infra/app_env.py"), str(tree)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
