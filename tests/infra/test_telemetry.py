"""Traces in Azure: the environment's managed OpenTelemetry agent takes the apps' OTLP and
sends it, with the Dapr sidecars' spans, to Application Insights; the sidecars' spans are
not sent a second time through daprAIConnectionString. Each check also fails on a broken
copy."""

import shutil

import pytest

from infra_support import ROOT, parse_bicep, replace_in

ENVIRONMENT = "modules/environment.bicep"


def telemetry_problems(infra):
    environment = parse_bicep(infra / ENVIRONMENT)["resources"]["environment"]
    properties = environment["config"]["properties"]
    problems = []
    if not environment["api_version"].endswith("-preview"):
        problems.append("openTelemetryConfiguration needs a preview API version")
    traces = properties.get("openTelemetryConfiguration", {}).get("tracesConfiguration", {})
    if traces.get("destinations") != ["appInsights"]:
        problems.append(f"traces go to {traces.get('destinations')}, not appInsights")
    if traces.get("includeDapr") is not True:
        problems.append("the sidecars' spans are not in the apps' traces (includeDapr)")
    if "daprAIConnectionString" in properties:
        problems.append("daprAIConnectionString sends the sidecars' spans a second time")
    if "connectionString" not in properties.get("appInsightsConfiguration", {}):
        problems.append("no Application Insights connection string for the agent")
    return problems


def test_the_apps_and_the_sidecars_trace_to_application_insights_once():
    assert telemetry_problems(ROOT / "infra") == []


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ("includeDapr: true", "includeDapr: false", "includeDapr"),
        ("destinations: ['appInsights']", "destinations: []", "not appInsights"),
        ("    appInsightsConfiguration: {", "    daprAIConnectionString: appInsightsConnectionString\n    appInsightsConfiguration: {", "second time"),
    ],
)
def test_a_broken_copy_is_caught(tmp_path, old, new, complaint):
    infra = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", infra)
    replace_in(infra / ENVIRONMENT, old, new)
    problems = telemetry_problems(infra)
    assert any(complaint in p for p in problems), problems
