"""infra/hooks/preflight.py (the preprovision hook), run as azd runs it, against a fake
Azure that answers with the REST API specifications' examples (arm-examples/): it refuses
a region where PostgreSQL is restricted or lacks the version, tier or SKU infra/ deploys,
where Container Apps is not offered, or where a quota has no room; it warns and lets azd
go on when a check cannot be made."""

import copy
import re

import pytest

from hooks_support import ROOT, SUB, TENANT, Reply, arm_error, arm_example, run_hook

import preflight

LOCATION = "eastus"
CAPABILITIES = f"/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/{LOCATION}/capabilities"
PROVIDER = f"/subscriptions/{SUB}/providers/Microsoft.App"
APP_USAGES = f"/subscriptions/{SUB}/providers/Microsoft.App/locations/{LOCATION}/usages"
PG_USAGES = (f"/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/{LOCATION}"
             "/resourceType/flexibleServers/usages")
GROUP = "rg-dev"
ENVIRONMENT = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.App/managedEnvironments/cae-abc"
SERVER = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.DBforPostgreSQL/flexibleServers/psql-abc"
# A previous provision's outputs (infra/main.bicep), for the re-provision cases.
PROVISIONED = {"AZURE_RESOURCE_GROUP": GROUP, "AZURE_CONTAINER_APPS_ENVIRONMENT_NAME": "cae-abc",
               "POSTGRES_SERVER_NAME": "psql-abc"}

ENV = {"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_TENANT_ID": TENANT, "AZURE_LOCATION": LOCATION, "AZURE_ENV_NAME": "dev"}
MAIN_BICEP = (ROOT / "infra" / "main.bicep").read_text()


def body(name):
    return copy.deepcopy(arm_example(name)["responses"]["200"]["body"])


def capabilities():
    return body("CapabilitiesByLocationList.json")


def usages(name, current=None, limit=None, example="Usages_List.json"):
    """An example's usages with one of them changed."""
    answer = body(example)
    for usage in answer["value"]:
        if usage["name"]["value"] == name:
            usage["currentValue"] = usage["currentValue"] if current is None else current
            usage["limit"] = usage["limit"] if limit is None else limit
    return answer


@pytest.fixture
def azure(fake):
    """A subscription and region that can take the template, as the examples say."""
    fake.on("GET", CAPABILITIES, [Reply(body=capabilities())])
    fake.on("GET", PROVIDER, [Reply(body=body("Providers_Get_Microsoft.App.json"))])
    fake.on("GET", APP_USAGES, [Reply(body=body("Usages_List.json"))])
    fake.on("GET", PG_USAGES, [Reply(body=body("QuotaUsagesForFlexibleServers.json"))])
    return fake


def test_a_region_that_offers_everything_passes(azure, tools):
    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout
    assert "PostgreSQL: OK: PostgreSQL 17, Burstable Standard_B1ms is offered in eastus, not restricted" in said
    assert "Container Apps: OK: managed environments are offered in eastus" in said
    assert "quota: OK: Container Apps environments: 5 of 10 used, 1 needed" in said
    assert "quota: OK: Container Apps cores: 3 of 20 used, 0.5 needed" in said
    assert "quota: OK: PostgreSQL standardBSFamily vCores: 0 of 10000 used, 1 needed" in said
    assert "OK: eastus can take this template" in said
    assert "WARNING" not in said
    versions = {r.path: r.query["api-version"] for r in azure.requests}
    assert versions == {CAPABILITIES: "2025-08-01", PROVIDER: "2024-03-01", APP_USAGES: "2026-01-01", PG_USAGES: "2025-08-01"}
    assert all(r.method == "GET" for r in azure.requests)
    assert not tools.az_was_run()


def test_the_region_is_compared_whatever_its_spelling(azure, tools):
    result = run_hook("preflight.py", azure, tools, {**ENV, "AZURE_LOCATION": "East US"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: eastus can take this template" in result.stdout


def restricted_by_flag(answer):
    # FlexibleServerCapability.restricted with CapabilityBase's status and reason (Capabilities.json,
    # 2025-08-01); no example has it set, so this one is derived from the definitions.
    answer["value"][0].update({"restricted": "Enabled", "status": "Disabled",
                               "reason": "Subscriptions are restricted from provisioning in this region."})


def restricted_by_feature(answer):
    # The example's supportedFeatures entry OfferRestricted, turned on.
    for feature in answer["value"][0]["supportedFeatures"]:
        if feature["name"] == "OfferRestricted":
            feature["status"] = "Enabled"


@pytest.mark.parametrize("restrict", [restricted_by_flag, restricted_by_feature], ids=["restricted", "OfferRestricted"])
def test_a_region_restricted_for_the_subscription_is_refused_with_what_to_do(azure, tools, restrict):
    answer = capabilities()
    restrict(answer)
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "preflight: FAILED: eastus cannot take this template, nothing was created" in result.stderr
    assert "PostgreSQL flexible server is restricted in eastus for this subscription's offer" in result.stderr
    assert "azd env set AZURE_LOCATION <region>" in result.stderr
    others = re.search(r"\((australiaeast, .*)\)", result.stderr).group(1).split(", ")
    allowed = re.findall(r"'(\w+)'", re.search(r"@allowed\(\[(.*?)\]\)\s*@description\('Azure region", MAIN_BICEP, re.S).group(1))
    assert sorted(others + ["eastus"]) == sorted(allowed)
    assert preflight.RESTRICTED_HELP in result.stderr
    assert "azd env set PREFLIGHT_SKIP true" in result.stderr


def test_a_missing_version_is_refused(azure, tools):
    answer = capabilities()
    answer["value"][0]["supportedServerVersions"] = [
        v for v in answer["value"][0]["supportedServerVersions"] if v["name"] != "17"]
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "PostgreSQL 17 is not offered in eastus (offered: 11, 12, 13, 14, 15, 16)" in result.stderr
    assert preflight.QUOTA_HELP not in result.stderr, "more quota would not help"


def test_every_page_of_a_list_answer_is_read(azure, tools):
    answer = capabilities()
    first = copy.deepcopy(answer)
    first["value"][0]["supportedServerVersions"] = first["value"][0]["supportedServerVersions"][:-1]
    first["nextLink"] = f"{azure.url}/pages/capabilities/2"
    azure.on("GET", CAPABILITIES, [Reply(body=first)])
    azure.on("GET", "/pages/capabilities/2", [Reply(body={"value": [{
        "name": "FlexibleServerCapabilities", "supportedServerVersions": answer["value"][0]["supportedServerVersions"][-1:]}]})])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert azure.seen("GET", "/pages/capabilities/2")[0].headers["Authorization"].startswith("Bearer fake-arm-token-")


def test_a_next_page_elsewhere_than_arm_is_not_followed(azure, tools):
    answer = capabilities()
    answer["nextLink"] = "https://elsewhere.invalid/page/2"
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL: WARNING: not checked: the next page of" in result.stdout


def test_a_missing_sku_is_refused(azure, tools):
    answer = capabilities()
    burstable = answer["value"][0]["supportedServerEditions"][0]
    burstable["supportedServerSkus"] = [s for s in burstable["supportedServerSkus"] if s["name"] != "Standard_B1ms"]
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "the PostgreSQL SKU Standard_B1ms (Burstable) is not offered in eastus" in result.stderr


def test_a_sku_that_is_disabled_is_refused_with_its_reason(azure, tools):
    answer = capabilities()
    b1ms = answer["value"][0]["supportedServerEditions"][0]["supportedServerSkus"][0]
    b1ms.update({"status": "Disabled", "reason": "Out of capacity"})
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "the PostgreSQL SKU Standard_B1ms is not available in eastus (Out of capacity)" in result.stderr


def test_a_missing_tier_is_refused(azure, tools):
    answer = capabilities()
    answer["value"][0]["supportedServerEditions"] = answer["value"][0]["supportedServerEditions"][1:]
    azure.on("GET", CAPABILITIES, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "the PostgreSQL tier Burstable is not offered in eastus" in result.stderr


def test_a_region_without_container_apps_is_refused(azure, tools):
    provider = body("Providers_Get_Microsoft.App.json")
    for resource_type in provider["resourceTypes"]:
        resource_type["locations"] = [name for name in resource_type["locations"] if name != "East US"]
    azure.on("GET", PROVIDER, [Reply(body=provider)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "Container Apps environments are not offered in eastus to this subscription" in result.stderr


@pytest.mark.parametrize(
    "path, answer, refusal",
    [
        (APP_USAGES, usages("ManagedEnvironmentCount", current=10),
         "Container Apps environments: 10 of 10 used, 1 needed"),
        (APP_USAGES, usages("ManagedEnvironmentCores", current=19.75),
         "Container Apps cores: 19.75 of 20 used, 0.5 needed"),
        (PG_USAGES, usages("standardBSFamily", current=4, limit=4, example="QuotaUsagesForFlexibleServers.json"),
         "PostgreSQL standardBSFamily vCores: 4 of 4 used, 1 needed"),
    ],
    ids=["environments", "cores", "postgres-vcores"],
)
def test_a_quota_without_room_is_refused_with_the_quota_link(azure, tools, path, answer, refusal):
    azure.on("GET", path, [Reply(body=answer)])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 1
    assert f"  - {refusal}" in result.stderr
    assert f"or ask for more quota in this region: {preflight.QUOTA_HELP}" in result.stderr
    assert "azd env set AZURE_LOCATION <region>" in result.stderr


def test_cores_for_the_start_but_not_for_every_replica_only_warn(azure, tools):
    azure.on("GET", APP_USAGES, [Reply(body=usages("ManagedEnvironmentCores", current=19))])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "quota: OK: Container Apps cores: 19 of 20 used, 0.5 needed" in result.stdout
    assert "the apps at their most replicas need 1.25, more than the 1 left" in result.stdout
    assert "OK: eastus can take this template (but see the warning above)" in result.stdout


def test_what_an_earlier_provision_created_needs_no_new_quota(azure, tools):
    azure.on("GET", APP_USAGES, [Reply(body=usages("ManagedEnvironmentCount", current=10))])
    azure.on("GET", PG_USAGES, [Reply(body=usages("standardBSFamily", current=1, limit=1,
                                                  example="QuotaUsagesForFlexibleServers.json"))])
    azure.on("GET", ENVIRONMENT, [Reply(body={"name": "cae-abc"})])
    azure.on("GET", SERVER, [Reply(body={"name": "psql-abc"})])

    result = run_hook("preflight.py", azure, tools, {**ENV, **PROVISIONED})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Container Apps environments: 10 of 10 used, 0 needed (what this environment provisioned" in result.stdout
    assert "PostgreSQL standardBSFamily vCores: 1 of 1 used, 0 needed" in result.stdout
    assert azure.seen("GET", ENVIRONMENT)[0].query["api-version"] == "2026-01-01"
    assert azure.seen("GET", SERVER)[0].query["api-version"] == "2025-08-01"


def test_named_resources_that_are_gone_need_quota_again(azure, tools):
    azure.on("GET", APP_USAGES, [Reply(body=usages("ManagedEnvironmentCount", current=10))])
    azure.on("GET", ENVIRONMENT, [arm_error(404, "ResourceNotFound", "gone")])
    azure.on("GET", SERVER, [arm_error(404, "ResourceNotFound", "gone")])

    result = run_hook("preflight.py", azure, tools, {**ENV, **PROVISIONED})

    assert result.returncode == 1
    assert "Container Apps environments: 10 of 10 used, 1 needed" in result.stderr


def test_a_forbidden_check_warns_and_the_others_still_run(azure, tools):
    azure.on("GET", CAPABILITIES, [arm_error(403, "AuthorizationFailed", "no read access to the capabilities")])

    result = run_hook("preflight.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL: WARNING: not checked: GET " in result.stdout
    assert "answered 403 AuthorizationFailed: no read access to the capabilities" in result.stdout
    assert len(azure.seen("GET", CAPABILITIES)) == 1, "a 403 is not retried"
    # The SKU's vCores come from its name when the capabilities cannot be read.
    assert "quota: OK: PostgreSQL standardBSFamily vCores: 0 of 10000 used, 1 needed" in result.stdout
    assert "done: nothing refused, but 1 check(s) could not be made (above)" in result.stdout


def test_an_unreachable_azure_warns_once_and_goes_on(fake, tools):
    result = run_hook("preflight.py", fake, tools, {**ENV, "AZURE_RESOURCE_MANAGER_URL": "http://127.0.0.1:9"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PostgreSQL: WARNING: not checked: GET " in result.stdout
    assert "still failing after 3 tries: cannot reach 127.0.0.1:9" in result.stdout
    assert result.stdout.count("not tried after an earlier failure (GET ") == 3
    assert "done: nothing refused, but 4 check(s) could not be made (above)" in result.stdout


def test_a_signed_out_azd_warns_and_goes_on(fake, tools):
    result = run_hook("preflight.py", fake, tools, {**ENV, "FAKE_AZD_FAIL": "1"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "'azd auth token' failed (exit code 1)" in result.stdout
    assert not fake.requests
    assert len(tools.azd_calls()) == 1, "one failed sign-in is enough"


@pytest.mark.parametrize("missing", ["AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"])
def test_without_a_region_or_subscription_yet_it_warns_and_goes_on(fake, tools, missing):
    result = run_hook("preflight.py", fake, tools, {**ENV, missing: None})

    assert result.returncode == 0, result.stdout + result.stderr
    what = "the region" if missing == "AZURE_LOCATION" else "the subscription"
    assert f"WARNING: not checked: {what} not chosen yet (azd asks for it next)" in result.stdout
    assert not fake.requests
    assert not tools.azd_calls()


def test_a_region_the_template_does_not_allow_is_refused_before_asking_azure(fake, tools):
    result = run_hook("preflight.py", fake, tools, {**ENV, "AZURE_LOCATION": "francesouth"})

    assert result.returncode == 1
    assert "francesouth is not a region infra/main.bicep allows for `location`" in result.stderr
    assert not fake.requests


def test_it_can_be_skipped(fake, tools):
    result = run_hook("preflight.py", fake, tools, {**ENV, "PREFLIGHT_SKIP": "true"})

    assert result.returncode == 0
    assert "skipped (PREFLIGHT_SKIP)" in result.stdout
    assert not fake.requests


def test_it_runs_from_any_working_directory(azure, tools, tmp_path):
    result = run_hook("preflight.py", azure, tools, ENV, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "sku, family, vcores",
    [
        ("Standard_B1ms", "standardBSFamily", 1),
        ("Standard_B2s", "standardBSFamily", 2),
        # The example's other family (QuotaUsagesForFlexibleServers.json).
        ("Standard_D2ds_v4", "standardDDSv4Family", 2),
        ("Standard_D4s_v3", "standardDSv3Family", 4),
        ("Standard_E8ds_v5", "standardEDSv5Family", 8),
        ("Burstable", None, None),
    ],
)
def test_sku_families_and_vcores(sku, family, vcores):
    assert preflight.sku_family(sku) == family
    assert preflight.vcores_in_name(sku) == vcores
