"""infra/hooks/infra_template.py, imported: it reads from infra/ what the preflight checks
(regions, the PostgreSQL version, SKU and tier, API versions, cores), from the real files
and from small ones that follow values through params, module calls, main.parameters.json
and the azd environment; and it says what it cannot tell rather than guess."""

import json
import re

import pytest

import azure_api
import infra_template
from hooks_support import ROOT

INFRA = ROOT / "infra"


def real(environ=None):
    return infra_template.Infra(INFRA, environ or {})


def write(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return infra_template.Infra(folder, {})


# The real infra/: the reader finds what a plain look at the files finds.


def test_the_regions_are_main_bicep_s_allowed_locations():
    text = (INFRA / "main.bicep").read_text()
    block = re.search(r"@allowed\(\[(.*?)\]\)\s*@description\('Azure region", text, re.S).group(1)
    assert real().allowed_locations() == re.findall(r"'(\w+)'", block)
    assert "eastus" in real().allowed_locations()


def test_the_postgres_plan_is_what_the_bicep_says():
    server = (INFRA / "modules" / "postgres.bicep").read_text()
    main = (INFRA / "main.bicep").read_text()
    plan = real().postgres()
    sku = re.search(r"sku: \{\s*name: '(\w+)'\s*tier: '(\w+)'", server)
    assert (plan.sku_name, plan.sku_tier) == sku.groups()
    assert plan.version == re.search(r"param postgresVersion string = '(\d+)'", main).group(1)
    assert plan.api_version == re.search(r"'Microsoft\.DBforPostgreSQL/flexibleServers@([^']+)' = \{", server).group(1)


def test_the_cores_are_the_apps_and_the_job_s():
    cores = real().cores()
    # batch 0.25 x 1, order-processor 0.25 x 1..3, the bootstrap job 0.25 while it runs.
    assert (cores.at_start, cores.at_most) == (0.5, 1.25)


def test_the_hooks_call_container_apps_at_the_version_infra_deploys_them_with():
    for kind in ("Microsoft.App/containerApps", "Microsoft.App/jobs"):
        assert real().api_version(kind) == azure_api.APP_API_VERSION


def test_the_postgres_version_follows_the_azd_environment_when_main_parameters_maps_it(tmp_path):
    files = {
        "main.bicep": "param postgresVersion string = '17'\nmodule pg 'modules/pg.bicep' = {\n  params: {\n"
                      "    version: postgresVersion\n  }\n}\n",
        "modules/pg.bicep": "param version string\nresource s 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {\n"
                            "  sku: {\n    name: 'Standard_B1ms'\n    tier: 'Burstable'\n  }\n"
                            "  properties: {\n    version: version\n  }\n}\n",
        "main.parameters.json": json.dumps({"parameters": {"postgresVersion": {"value": "${POSTGRES_VERSION=16}"}}}),
    }
    infra = write(tmp_path, files)
    assert infra.postgres().version == "16"
    assert infra_template.Infra(tmp_path, {"POSTGRES_VERSION": "15"}).postgres().version == "15"
    # "${VAR=}" unset: an empty value, which counts as none: the Bicep default.
    (tmp_path / "main.parameters.json").write_text(json.dumps({"parameters": {"postgresVersion": {"value": "${V=}"}}}))
    assert infra_template.Infra(tmp_path, {}).postgres().version == "17"


def test_a_sku_passed_down_from_a_main_param_with_a_default_is_followed(tmp_path):
    infra = write(tmp_path, {
        "main.bicep": "@allowed(['Standard_B1ms', 'Standard_D2ds_v5'])\n@description('SKU (a comment // here).')\n"
                      "param skuName string = 'Standard_D2ds_v5'\nvar tier = 'GeneralPurpose'\n"
                      "module pg 'modules/pg.bicep' = {\n  name: 'pg'\n  params: { sku: skuName, tier: tier }\n}\n",
        "modules/pg.bicep": "param sku string\nparam tier string\nparam version string = '16'\n"
                            "// resource old 'Microsoft.DBforPostgreSQL/flexibleServers@2020-01-01' = {\n"
                            "resource s 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {\n"
                            "  name: 'x'\n  sku: {\n    name: sku\n    tier: tier\n  }\n"
                            "  properties: {\n    version: version /* the default */\n"
                            "    network: { url: 'https://example.invalid/a//b' }\n  }\n}\n",
    })
    plan = infra.postgres()
    assert (plan.sku_name, plan.sku_tier, plan.version, plan.api_version) == ("Standard_D2ds_v5", "GeneralPurpose", "16", "2025-08-01")


def test_what_cannot_be_told_is_said_not_guessed(tmp_path):
    infra = write(tmp_path, {
        "main.bicep": "param suffix string\nmodule pg 'modules/pg.bicep' = {\n  params: {\n    sku: 'Standard_${suffix}'\n  }\n}\n",
        "modules/pg.bicep": "param sku string\nresource s 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {\n"
                            "  sku: {\n    name: sku\n    tier: 'Burstable'\n  }\n  properties: {\n    version: '17'\n  }\n}\n",
    })
    with pytest.raises(infra_template.Unreadable, match=r"infra/main.bicep: cannot tell the value of \"'Standard_\$\{suffix\}'\""):
        infra.postgres()


def test_cores_of_apps_and_jobs_with_arm_s_defaults(tmp_path):
    infra = write(tmp_path, {
        "main.bicep": "",
        "app/a.bicep": "resource app 'Microsoft.App/containerApps@2026-01-01' = if (deploy) {\n  properties: {\n"
                       "    template: {\n      containers: [\n        {\n          name: 'a'\n"
                       "          resources: { cpu: json('0.5'), memory: '1Gi' }\n        }\n"
                       "        {\n          name: 'b'\n          resources: {\n            cpu: 1\n          }\n        }\n"
                       "      ]\n      scale: {\n        minReplicas: 2\n      }\n    }\n  }\n}\n"
                       "resource other 'Microsoft.App/containerApps@2026-01-01' existing = {\n  name: 'other'\n}\n",
        "job.bicep": "resource job 'Microsoft.App/jobs@2026-01-01' = {\n  properties: {\n    configuration: {\n"
                     "      triggerType: 'Schedule'\n      scheduleTriggerConfig: {\n        parallelism: 3\n      }\n    }\n"
                     "    template: {\n      containers: [\n        { name: 'j', resources: { cpu: json('0.25') } }\n      ]\n"
                     "    }\n  }\n}\n",
    })
    cores = infra.cores()
    # 1.5 cores per replica: 2 replicas at first, ARM's default of 10 at most; the job 3 x 0.25.
    assert (cores.at_start, cores.at_most) == (3.0, 15.75)


def test_a_resource_loop_of_another_kind_does_not_matter(tmp_path):
    infra = write(tmp_path, {
        "main.bicep": "@allowed([\n  'eastus'\n  'westus'\n])\nparam location string\n"
                      "resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for r in rules: {\n  name: r\n}]\n",
    })
    assert infra.allowed_locations() == ["eastus", "westus"]
    with pytest.raises(infra_template.Unreadable, match="declares Microsoft.Resources/resourceGroups with 0 API versions"):
        infra.api_version("Microsoft.Resources/resourceGroups")


@pytest.mark.parametrize(
    "expression, value",
    [("'text'", "text"), ("'it\\'s'", "it's"), ("3", 3), ("0.5", 0.5), ("json('0.25')", 0.25), ("true", True),
     ("'a${b}'", None), ("toLower('A')", None), ("name", None)],
)
def test_literals(expression, value):
    assert infra_template.literal(expression) == value
