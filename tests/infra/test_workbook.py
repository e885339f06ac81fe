"""Issue 17: the dashboard, an Azure Workbook (infra/modules/workbook.bicep). Its content is
JSON built by Bicep from an object; here that object is evaluated as deployed and read
back: a workbook whose every query runs against the Log Analytics workspace over the
chosen time range, whose log queries keep the alerts' convention and read messages the
services log, and which Kusto.Language parses against the tables' columns. main.bicep
outputs its portal URL for the postdeploy hook. Each check also fails on a broken copy."""

import json
import re
import shutil

import pytest

import kusto
import log_queries
from infra_support import ROOT, BicepEval, parse_bicep, replace_in
from test_alerts import example, messages_not_logged

WORKBOOK = "infra/modules/workbook.bicep"
WORKSPACE_ID = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-example"
                "/providers/Microsoft.OperationalInsights/workspaces/log-example")
APP_NAMES = {"batchAppName": "ca-batch-example", "orderProcessorAppName": "ca-orderproc-example"}
# The workbook's own parameters a query may use, with a value for the Kusto check.
WORKBOOK_PARAMETERS = {"{TimeRange:grain}": "1h"}
LOGS = "microsoft.operationalinsights/workspaces"


def deployed(root):
    """The workbook's serializedData as deployed, parsed."""
    doc = parse_bicep(root / WORKBOOK)
    params = {name: f"<{name}>" for name in doc["parameters"]} | APP_NAMES
    evaluate = BicepEval(doc, params, {"workspace": {"id": WORKSPACE_ID}}).value
    return json.loads(evaluate(doc["resources"]["workbook"]["config"]["properties"]["serializedData"]))


def workbook_problems(root):
    problems = []
    try:
        data = deployed(root)
    except (ValueError, KeyError, TypeError) as error:
        return [f"the workbook's content does not evaluate to JSON: {error}"]
    if data.get("version") != "Notebook/1.0" or not data.get("items"):
        problems.append("not a Notebook/1.0 workbook with items")
    if data.get("fallbackResourceIds") != [WORKSPACE_ID.lower()]:
        problems.append(f"opens on {data.get('fallbackResourceIds')}, not the workspace")
    names = [item.get("name") for item in data["items"]]
    if len(set(names)) != len(names) or None in names:
        problems.append(f"step names are missing or repeated: {names}")
    parameters = {p["name"] for item in data["items"] if item.get("type") == 9
                  for p in item["content"]["parameters"]}
    queries = [item for item in data["items"] if item.get("type") == 3]
    if len(queries) < 6:
        problems.append(f"only {len(queries)} queries")
    for item in queries:
        content, name = item["content"], item["name"]
        if (content.get("version"), content.get("queryType"), content.get("resourceType")) != ("KqlItem/1.0", 0, LOGS):
            problems.append(f"{name}: not a log query of the workspace")
        if content.get("timeContextFromParameter") not in parameters:
            problems.append(f"{name}: its time range is not the workbook's parameter")
        for token in re.findall(r"\{[^{}]*\}", content["query"]):
            if token not in WORKBOOK_PARAMETERS or token.strip("{}").split(":")[0] not in parameters:
                problems.append(f"{name}: {token} is neither replaced by the Bicep nor a workbook parameter")
        if log_queries.CONSOLE_TABLE in content["query"] and not any(a in content["query"] for a in APP_NAMES.values()):
            problems.append(f"{name}: reads the console logs of no app")
    return problems


def test_the_workbook_is_json_of_log_queries_over_the_time_range():
    assert workbook_problems(ROOT) == []


def test_it_shows_what_issue_17_asks_for():
    queries = log_queries.workbook_queries(ROOT)
    uses = [log_queries.log_use(q) for q in queries.values()]
    read = {(u["service"], m, f) for u in uses if u for m in u["messages"] for f in u["fields"]}
    for field in ("read", "inserted", "already_present", "rejected", "duration_ms"):
        assert ("batch", "run finished", field) in read, field
    assert ("batch", "submitting a chunk failed; retrying", "reason") in read
    assert ("order-processor", "request failed", "message") in read
    spans = " ".join(q for q in queries.values() if log_queries.CONSOLE_TABLE not in q)
    assert "AppRequests" in spans and "'order-processor'" in spans  # request rate and errors
    assert "union AppRequests, AppDependencies" in spans and "top 20 by DurationMs desc" in spans  # slowest traces


def convention_problems(root):
    problems = []
    for title, query in log_queries.workbook_queries(root).items():
        problems += [f"{title}: {p}" for p in log_queries.convention_problems(query, log_queries.services(root))]
    return problems


def test_every_log_query_keeps_the_alerts_convention():
    assert convention_problems(ROOT) == []


def test_every_message_it_reads_is_logged_by_its_service():
    assert [p for p in messages_not_logged(ROOT, "workbook")] == []


def test_every_query_parses_and_names_known_columns():
    queries = {}
    for title, query in log_queries.workbook_queries(ROOT).items():
        for token, value in WORKBOOK_PARAMETERS.items():
            query = query.replace(token, value)
        queries[title] = example(query)
    assert kusto.diagnostics(queries) == {title: [] for title in queries}


def test_main_outputs_the_workbooks_portal_url():
    main = parse_bicep(ROOT / "infra/main.bicep")
    output = main["outputs"]["AZURE_WORKBOOK_URL"]["value"]
    assert output == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "workbook", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "url"}}}}}}
    assert main["modules"]["workbook"]["detail"]["path"] == "modules/workbook.bicep"
    url = parse_bicep(ROOT / WORKBOOK)["outputs"]["url"]["value"]
    assert url.startswith("${environment().portal}/#@${tenant().tenantId}/resource${workbook.id}"), url
    assert url.endswith("/workbook")


@pytest.fixture
def tree(tmp_path):
    for part in ("infra", "src"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("target"))
    shutil.copy(ROOT / "azure.yaml", tmp_path / "azure.yaml")
    return tmp_path


@pytest.mark.parametrize(
    "check, old, new, complaint",
    [
        (workbook_problems, "fallbackResourceIds: [toLower(workspace.id)]", "fallbackResourceIds: []", "not the workspace"),
        (workbook_problems, "timeContextFromParameter: 'TimeRange'\n        queryType: 0\n        resourceType: logs\n        visualization: 'table'\n      }\n    }\n    {\n      type: 3\n      name: 'orders'",
         "timeContextFromParameter: 'Range'\n        queryType: 0\n        resourceType: logs\n        visualization: 'table'\n      }\n    }\n    {\n      type: 3\n      name: 'orders'",
         "runs: its time range is not"),
        (workbook_problems, "'{order-processor}', orderProcessorAppName)", "'{order-processor}', '{order-processor}')",
         "{order-processor} is neither replaced"),
        (workbook_problems, "      name: 'duration'\n", "      name: 'orders'\n", "repeated"),
        (workbook_problems, "{TimeRange:grain})\n'''\n        size: 0\n        timeContextFromParameter: 'TimeRange'\n        queryType: 0\n        resourceType: logs\n        visualization: 'timechart'\n      }\n      customWidth: '50'\n    }\n    {\n      type: 3\n      name: 'duration'",
         "{Range:grain})\n'''\n        size: 0\n        timeContextFromParameter: 'TimeRange'\n        queryType: 0\n        resourceType: logs\n        visualization: 'timechart'\n      }\n      customWidth: '50'\n    }\n    {\n      type: 3\n      name: 'duration'",
         "orders: {Range:grain} is neither"),
        (convention_problems, "| summarize retries = count() by bin(TimeGenerated, {TimeRange:grain}), reason = tostring(e.reason)",
         "| summarize retries = count() by bin(TimeGenerated, {TimeRange:grain}), reason = tostring(e['reason'])",
         "batch: chunk retries, by reason: reads a field as e[...]"),
        (lambda root: messages_not_logged(root, "workbook"), "'orders stored'", "'order stored'",
         "src/order-processor logs no 'order stored'"),
    ],
)
def test_a_broken_copy_is_caught(tree, check, old, new, complaint):
    replace_in(tree / WORKBOOK, old, new)
    problems = check(tree)
    assert any(complaint in p for p in problems), problems
