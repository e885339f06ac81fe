"""Issue 17: the alerts (infra/modules/alerts.bicep). Their queries keep the one convention
that lets log_queries.py say which fields and messages each reads, Kusto.Language parses
and analyses them against the tables' columns, every message they match is one the
service's code logs, the no-completed-run window follows the cron period, they evaluate
cheaply and go to the action group; the console lines land whole in the table they read.
Each check is also shown to fail on a broken copy."""

import re
import shutil

import pytest

import kusto
import log_queries
from infra_support import ROOT, BicepEval, parse_bicep, replace_in

ALERTS = "infra/modules/alerts.bicep"
# Log alerts are billed per rule by evaluation frequency, metric alerts per time series
# (Azure Monitor pricing, USD a month).
LOG_ALERT_PRICE = {"PT5M": 1.50, "PT10M": 1.00, "PT15M": 0.50}
METRIC_ALERT_PRICE = 0.10
POSTGRES_METRICS = {"storage_percent", "cpu_percent", "active_connections"}


def example(query):
    """A query with its app tokens replaced as the Bicep replaces them."""
    return log_queries.TOKEN.sub(lambda m: f"ca-{m[1]}-example", query)


@pytest.fixture
def tree(tmp_path):
    for part in ("infra", "src"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("target"))
    shutil.copy(ROOT / "azure.yaml", tmp_path / "azure.yaml")
    return tmp_path


def convention_problems(root):
    problems = []
    for name, alert in log_queries.alerts(root).items():
        problems += [f"{name}: {p}" for p in log_queries.convention_problems(alert["query"], log_queries.services(root))]
        if log_queries.CONSOLE_TABLE not in alert["query"]:
            problems.append(f"{name}: does not read {log_queries.CONSOLE_TABLE}")
    return problems


def test_every_log_alert_keeps_the_query_convention():
    assert convention_problems(ROOT) == []


def test_the_extraction_finds_a_service_a_message_and_fields_for_every_log_alert():
    uses = log_queries.log_uses(ROOT)["alerts"]
    assert len(uses) == 4, uses
    for name, use in uses.items():
        assert use["service"] in log_queries.services(ROOT), (name, use)
        assert len(use["messages"]) == 1 and use["fields"], (name, use)
        assert "message" in use["fields"], (name, use)
    assert uses["batch-no-completed-run"] == {
        "service": "batch", "messages": ["run finished"], "fields": ["message", "outcome"]}
    assert uses["order-processor-server-errors"]["fields"] == ["cause", "error", "level", "message"]


def messages_not_logged(root, kind="alerts"):
    """Messages an alert (or a workbook query: kind "workbook") matches that its service's
    code does not log (as a Rust string literal in src/<service>/)."""
    problems = []
    for name, use in log_queries.log_uses(root)[kind].items():
        code = "".join(p.read_text() for p in sorted((root / "src" / use["service"]).rglob("*.rs")))
        for message in use["messages"]:
            if f'"{message}"' not in code:
                problems.append(f"{name}: src/{use['service']} logs no {message!r}")
    return problems


def test_every_message_an_alert_matches_is_logged_by_its_service():
    assert messages_not_logged(ROOT) == []


def token_problems(root):
    """Each `{service}` of a query is replaced with that service's container app name: the
    module parameter main.bicep fills with the name it gives the app module."""
    problems = []
    main = parse_bicep(root / "infra/main.bicep")
    modules = main["modules"]
    given = modules["alerts"]["config"]["params"]
    app_names = {}
    for service, module in log_queries.app_modules(root).items():
        for declaration in modules.values():
            if declaration["detail"]["path"] == f"{module}.bicep":
                app_names[service] = declaration["config"]["params"]["name"]
    for name, alert in log_queries.alerts(root).items():
        used = {f"{{{t}}}" for t in log_queries.TOKEN.findall(alert["query"])}
        if used != set(alert["tokens"]):
            problems.append(f"{name}: the query has {sorted(used)}, the Bicep replaces {sorted(alert['tokens'])}")
        for token, parameter in alert["tokens"].items():
            service = token.strip("{}")
            if given.get(parameter) != app_names.get(service):
                problems.append(f"{name}: {token} becomes {parameter}, which main.bicep gives "
                                f"{given.get(parameter)!r}, not {service}'s app name {app_names.get(service)!r}")
    return problems


def test_each_query_names_its_app_as_deployed():
    assert token_problems(ROOT) == []


def stale_window(root, period):
    doc = parse_bicep(root / ALERTS)
    (alert,) = [a for a in doc["variables"]["logAlerts"]["value"] if a["name"] == "batch-no-completed-run"]
    return BicepEval(doc, {"cronPeriodSeconds": period}, {}).value(alert["window"])


@pytest.mark.parametrize("period, minutes", [(1, 15), (10, 15), (150, 15), (151, 16), (600, 60), (28800, 2880)])
def test_the_no_run_window_is_six_cron_periods_and_at_least_15_minutes(period, minutes):
    assert stale_window(ROOT, period) == f"PT{minutes}M"


def test_the_cron_schedule_and_the_alert_take_the_same_period():
    main = parse_bicep(ROOT / "infra/main.bicep")
    modules = main["modules"]
    assert modules["daprComponents"]["config"]["params"]["cronPeriodSeconds"] == "cronPeriodSeconds"
    assert modules["alerts"]["config"]["params"]["cronPeriodSeconds"] == "cronPeriodSeconds"
    components = parse_bicep(ROOT / "infra/modules/dapr-components.bicep")
    schedule = {m["name"]: m["value"] for m in components["resources"]["cron"]["config"]["properties"]["metadata"]}
    assert schedule["schedule"] == "@every ${cronPeriodSeconds}s"
    default = main["parameters"]["cronPeriodSeconds"]["default"]
    assert log_queries.alerts(ROOT)["batch-no-completed-run"]["window"] == stale_window(ROOT, default) == "PT15M"


def body(resource):
    """The body of a resource, of its loop's body for a `[for ...]` resource."""
    config = resource["config"]
    return config["config"] if "loop_type" in config else config


def rule_problems(root):
    """How the alert rules, as deployed, differ from what the project promises."""
    doc = parse_bicep(root / ALERTS)
    resources = doc["resources"]
    problems = []
    log_rules = [r for r in resources.values() if r["type"] == "Microsoft.Insights/scheduledQueryRules"]
    metric_rules = [r for r in resources.values() if r["type"] == "Microsoft.Insights/metricAlerts"]
    groups = {s for s, r in resources.items() if r["type"] == "Microsoft.Insights/actionGroups"}
    if len(log_rules) != 1 or len(metric_rules) != 1 or len(groups) != 1:
        return [f"expected one loop of log alerts, one of metric alerts and one action group: {sorted(resources)}"]
    log_body = body(log_rules[0])["properties"]
    criterion = log_body["criteria"]["allOf"][0]
    if (criterion.get("timeAggregation"), criterion.get("operator"), criterion.get("threshold")) != ("Count", "GreaterThan", 0):
        problems.append("a log alert fires on something else than the query returning rows")
    if log_body.get("skipQueryValidation") is not True:
        problems.append("log alerts validate their query: the table does not exist before the first console line")
    for alert in log_queries.alerts(root).values():
        frequency, window = alert["frequency"], alert["window"]
        if frequency not in LOG_ALERT_PRICE:
            problems.append(f"{alert['display_name']}: evaluated every {frequency}, not every 5 to 15 minutes")
        elif int(re.fullmatch(r"PT(\d+)M", window)[1]) < int(re.fullmatch(r"PT(\d+)M", frequency)[1]):
            problems.append(f"{alert['display_name']}: its window {window} is shorter than its frequency {frequency}")
    metrics = {a["metric"]: a for a in doc["variables"]["metricAlerts"]["value"]}
    if set(metrics) != POSTGRES_METRICS:
        problems.append(f"the metric alerts watch {sorted(metrics)}, not {sorted(POSTGRES_METRICS)}")
    evaluate = BicepEval(doc, {}, {}).value
    connections = evaluate(metrics.get("active_connections", {}).get("threshold", 0))
    if not 0 < connections < evaluate("maxUserConnections"):
        problems.append(f"the connections alert fires at {connections}, not below B1ms's user connections")
    metric_body = body(metric_rules[0])["properties"]
    if metric_body["scopes"] != [{"operator": {"type": "property_accessor", "operands": {"operand_1": "postgres", "operand_2": "id"}}}]:
        problems.append("the metric alerts do not watch the PostgreSQL server alone")
    return problems


def test_the_rules_fire_on_rows_evaluate_cheaply_and_watch_postgres():
    assert rule_problems(ROOT) == []


def monthly_cost(root):
    doc = parse_bicep(root / ALERTS)
    log = sum(LOG_ALERT_PRICE[a["frequency"]] for a in log_queries.alerts(root).values())
    return log + METRIC_ALERT_PRICE * len(doc["variables"]["metricAlerts"]["value"])


def test_the_documented_cost_is_the_rules_cost():
    cost = f"${monthly_cost(ROOT):.2f}"
    assert cost == "$4.30"
    assert f"about {cost} a month" in (ROOT / "docs/azure.md").read_text()


def test_the_console_lines_land_whole_in_the_table_the_queries_read():
    environment = parse_bicep(ROOT / "infra/modules/environment.bicep")["resources"]["environment"]
    logs = environment["config"]["properties"]["appLogsConfiguration"]
    assert logs["destination"] == "log-analytics"  # ContainerAppConsoleLogs_CL, Log_s
    assert logs["logAnalyticsConfiguration"]["dynamicJsonColumns"] is False


def test_every_alert_query_parses_and_names_known_columns():
    queries = {name: example(alert["query"]) for name, alert in log_queries.alerts(ROOT).items()}
    assert kusto.diagnostics(queries) == {name: [] for name in queries}


def test_the_kusto_check_finds_errors():
    found = kusto.diagnostics({
        "column": "ContainerAppConsoleLogs_CL | where ContainerAppTitle_s == 'x'",
        "syntax": "ContainerAppConsoleLogs_CL | where Log_s ==",
        "function": "ContainerAppConsoleLogs_CL | extend e = parse_jsn(Log_s)",
    })
    assert "ContainerAppTitle_s" in " ".join(found["column"])
    assert found["syntax"] and "parse_jsn" in " ".join(found["function"])


@pytest.mark.parametrize(
    "check, old, new, complaint",
    [
        (convention_problems, "| extend e = parse_json(Log_s)\n| where tostring(e.message) == 'run finished'\n| summarize",
         "| extend j = parse_json(Log_s)\n| where tostring(j.message) == 'run finished'\n| summarize",
         "batch-no-completed-run: does not match exactly one message"),
        (convention_problems, "| where tostring(e.message) == 'request failed' and",
         "| where Log_s has 'request failed' and", "order-processor-server-errors: does not parse Log_s exactly once"),
        (convention_problems, "tolong(e.rejected) > 0", "tolong(e['rejected']) > 0", "reads a field as e[...]"),
        (convention_problems, "ContainerAppName_s == '{order-processor}'\n| extend e = parse_json(Log_s)\n| where tostring(e.message) == 'not ready",
         "ContainerAppName_s startswith 'ca-orderproc'\n| extend e = parse_json(Log_s)\n| where tostring(e.message) == 'not ready",
         "order-processor-binding-unavailable: selects the apps []"),
        (messages_not_logged, "'run finished'\n| summarize", "'run complete'\n| summarize",
         "src/batch logs no 'run complete'"),
        (token_problems, "''', '{batch}', batchAppName)\n\n// (b)", "''', '{batch}', orderProcessorAppName)\n\n// (b)",
         "batch-no-completed-run: {batch} becomes orderProcessorAppName"),
        (token_problems, "| where ContainerAppName_s == '{batch}'\n| extend e = parse_json(Log_s)\n| where tostring(e.message) == 'run finished'\n| where tolong",
         "| where ContainerAppName_s == '{batcher}'\n| extend e = parse_json(Log_s)\n| where tostring(e.message) == 'run finished'\n| where tolong",
         "the query has ['{batcher}']"),
        (rule_problems, "frequency: 'PT15M'\n    window: 'PT15M'\n    query: ordersNotStoredQuery",
         "frequency: 'PT1M'\n    window: 'PT15M'\n    query: ordersNotStoredQuery", "evaluated every PT1M"),
        (rule_problems, "skipQueryValidation: true", "skipQueryValidation: false", "validate their query"),
        (rule_problems, "metric: 'cpu_percent'", "metric: 'cpu_percentage'", "the metric alerts watch"),
        (rule_problems, "threshold: (maxUserConnections * 80) / 100", "threshold: maxUserConnections + 5", "fires at 40"),
        (rule_problems, "threshold: 0\n", "threshold: 1\n", "fires on something else"),
    ],
)
def test_a_broken_copy_is_caught(tree, check, old, new, complaint):
    replace_in(tree / ALERTS, old, new)
    problems = check(tree)
    assert any(complaint in p for p in problems), problems
