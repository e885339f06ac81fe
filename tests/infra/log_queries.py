"""The Kusto queries of the alerts (infra/modules/alerts.bicep) and of the workbook
(infra/modules/workbook.bicep), read from the Bicep, and what each asks of the services'
JSON log lines: which service, which fields, which messages.

Every query over the console logs follows one convention, so that this can be read
without a Kusto parser:

- the table is ContainerAppConsoleLogs_CL, and one app is selected with
  `ContainerAppName_s == '{<service>}'` (the service's name in azure.yaml between braces:
  the Bicep replaces it with the container app's name);
- the line is parsed once, with `| extend e = parse_json(Log_s)`, and Log_s is not read
  otherwise;
- the line's fields are then read only as `e.<field>` (mostly `tostring(e.<field>)`,
  `tolong(e.<field>)`, ...), never as `e['<field>']` or through another name;
- the query is about one message, matched as `tostring(e.message) == '<message>'`; so its
  fields are keys of that message's lines (besides those every line has: timestamp,
  level, message, target, trace_id, span_id).

`python tests/infra/log_queries.py` prints, as JSON, what each alert and each workbook
query asks (service, fields, messages): for a test in any language that runs the services
and checks that their real log lines have those fields.
"""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_support import ROOT, BicepEval, app_modules, parse_bicep  # noqa: E402

CONSOLE_TABLE = "ContainerAppConsoleLogs_CL"
ALERTS = "infra/modules/alerts.bicep"
WORKBOOK = "infra/modules/workbook.bicep"

APP = re.compile(r"ContainerAppName_s\s*==\s*'\{([A-Za-z0-9_-]+)\}'")
PARSE_LINE = re.compile(r"\|\s*extend\s+e\s*=\s*parse_json\(Log_s\)")
FIELD = re.compile(r"(?<![\w.])e\.([A-Za-z_][A-Za-z0-9_]*)")
MESSAGE = re.compile(r"tostring\(e\.message\)\s*==\s*'([^'\\]*)'")
# `e` on its own, not followed by `.field`: in the extend that defines it, or a breach.
BARE_E = re.compile(r"(?<![\w.'\"])e\b(?!\s*\.\s*[A-Za-z_])")
TOKEN = re.compile(r"\{([A-Za-z0-9_-]+)\}")


def log_use(query):
    """What a query asks of the log lines: {"service", "fields", "messages"}, or None when
    it does not read the console logs."""
    if CONSOLE_TABLE not in query:
        return None
    apps = APP.findall(query)
    return {
        "service": apps[0] if len(apps) == 1 else None,
        "fields": sorted(set(FIELD.findall(query))),
        "messages": sorted(set(MESSAGE.findall(query))),
    }


def convention_problems(query, services):
    """How a query breaks the convention above, as sentences (none: it keeps it)."""
    if CONSOLE_TABLE not in query:
        return []
    problems = []
    apps = APP.findall(query)
    if len(apps) != 1 or apps[0] not in services:
        problems.append(f"selects the apps {apps}, not exactly one of {sorted(services)} "
                        "with ContainerAppName_s == '{<service>}'")
    if len(PARSE_LINE.findall(query)) != 1 or query.count("Log_s") != 1:
        problems.append("does not parse Log_s exactly once, with `| extend e = parse_json(Log_s)`")
    if len(BARE_E.findall(query)) != 1:
        problems.append("uses `e` other than as `e.<field>`")
    if re.search(r"(?<![\w.])e\s*\[", query):
        problems.append("reads a field as e[...]: write e.<field>")
    if len(set(MESSAGE.findall(query))) != 1:
        problems.append("does not match exactly one message with tostring(e.message) == '<message>'")
    elif query.count("e.message") != 1:
        problems.append("reads e.message other than in tostring(e.message) == '<message>'")
    if not FIELD.findall(query):
        problems.append("reads no field of the line")
    return problems


def _text(doc, node):
    """A query expression of a Bicep file as (text, {token: replacing expression}): a
    multi-line string, a variable holding one, or replace(<that>, '{token}', value)."""
    if isinstance(node, str):
        variable = doc.get("variables", {}).get(node)
        return _text(doc, variable["value"]) if variable else (node, {})
    function = node.get("function", {}) if isinstance(node, dict) else {}
    if function.get("type") == "replace":
        args = function["parameters"]
        text, tokens = _text(doc, args["original_string"])
        tokens[args["old_string"]] = args["new_string"]
        return text, tokens
    raise ValueError(f"a query that is not a string or replace(...): {node!r}")


def alerts(root=ROOT):
    """{alert name: {"query", "tokens", "frequency", "window", "severity", "display_name"}}
    of the log alerts in the alerts module (its `logAlerts` list), their windows evaluated
    with main.bicep's defaults."""
    doc = parse_bicep(root / ALERTS)
    defaults = main_defaults(root, "alerts")
    evaluate = BicepEval(doc, defaults, {}).value
    found = {}
    for alert in doc["variables"]["logAlerts"]["value"]:
        text, tokens = _text(doc, alert["query"])
        found[alert["name"]] = {
            "query": text,
            "tokens": tokens,
            "frequency": evaluate(alert["frequency"]),
            "window": evaluate(alert["window"]),
            "severity": alert["severity"],
            "display_name": evaluate(alert["displayName"]),
        }
    return found


def main_defaults(root, module):
    """The values main.bicep passes to one of its modules that are plain main.bicep
    parameters with a default (as azd deploys them when nothing overrides the default)."""
    main = parse_bicep(root / "infra/main.bicep")
    parameters = main["parameters"]
    given = main["modules"][module]["config"]["params"]
    return {name: parameters[value]["default"] for name, value in given.items()
            if isinstance(value, str) and value in parameters and "default" in parameters[value]}


def workbook_queries(root=ROOT):
    """{title: query} of the workbook's query steps, with their tokens as in the Bicep."""
    doc = parse_bicep(root / WORKBOOK)
    found = {}

    def walk(item):
        if isinstance(item, dict):
            content = item.get("content")
            if item.get("type") == 3 and isinstance(content, dict) and "query" in content:
                found[content.get("title", item.get("name"))] = _text(doc, content["query"])[0]
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(doc["variables"]["content"]["value"])
    return found


def log_uses(root=ROOT):
    """What each alert and each workbook query asks of the log lines, by kind and name."""
    uses = {"alerts": {}, "workbook": {}}
    for name, alert in alerts(root).items():
        uses["alerts"][name] = log_use(alert["query"])
    if (root / WORKBOOK).exists():
        for title, query in workbook_queries(root).items():
            use = log_use(query)
            if use is not None:
                uses["workbook"][title] = use
    return uses


def services(root=ROOT):
    return set(app_modules(root))


if __name__ == "__main__":
    json.dump(log_uses(), sys.stdout, indent=2)
    sys.stdout.write("\n")
