"""azd `postdeploy` hook (azure.yaml): the smoke test after both apps are deployed.

  1. apps: waits until the latest revisions of batch and order-processor are running and
     healthy (their health probes include the database for order-processor). Nothing is
     restarted: the apps retry the database until the bootstrap (bootstrap.py, run by azd
     before order-processor was deployed) has created their role, and converge by themselves;
  2. orders: reads batch's console log through Container Apps' log stream, the way
     `az containerapp logs show` does, and checks that its latest "run finished" summary
     (one JSON line per cron run) says every order of its file is stored.

It exits non-zero, saying what is wrong and how to look further, when a step fails. Run it
again at any time with `azd hooks run postdeploy`.

Environment (the azd environment: outputs of infra/main.bicep):
  AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, SERVICE_BATCH_NAME,
  SERVICE_ORDER_PROCESSOR_NAME; optional: AZURE_TENANT_ID (the tenant azd asks a token
  for), AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID (for the log queries it prints).
Time limits in seconds: APPS_TIMEOUT (300), BATCH_RUN_TIMEOUT (90); POLL_INTERVAL (10)
between look-ups; RETRY_DELAY (2), the first back-off of a request Azure throttled or
failed (it doubles, up to 30).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Tuple

# The shared module sits beside this script (sys.path[0]); importing it writes no
# __pycache__ into the project.
sys.dont_write_bytecode = True
from azure_api import Azure, AzdToken, Deadline, HookFailure, Output, require, run, seconds  # noqa: E402

REQUIRED = (
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "SERVICE_BATCH_NAME",
    "SERVICE_ORDER_PROCESSOR_NAME",
)
WHY = "These are outputs of infra/main.bicep: run 'azd provision' first (or 'azd env refresh')."
# Lines of batch's log read each time (the most `az containerapp logs show --tail` allows).
TAIL_LINES = 300
SUMMARY_MESSAGE = "run finished"


class Revision:
    """The latest revision of a container app, as last seen."""

    def __init__(self, app: str, app_properties: Dict[str, Any], name: Optional[str], properties: Dict[str, Any]) -> None:
        self.app = app
        self.app_properties = app_properties
        self.name = name
        self.properties = properties
        self.running = str(properties.get("runningState") or "unknown")
        self.health = str(properties.get("healthState") or "unknown")

    @property
    def label(self) -> str:
        return self.name or f"{self.app} (latest revision unknown)"

    @property
    def state(self) -> str:
        return f"{self.running}/{self.health}"

    @property
    def ready(self) -> bool:
        # Running or RunningAtMaxScale, and its health probes pass.
        return self.running.startswith("Running") and self.health == "Healthy"


class Smoke:
    """The deployment under test and the way to reach it."""

    def __init__(self, out: Output) -> None:
        env = require(REQUIRED, WHY)
        self.out = out
        self.subscription = env["AZURE_SUBSCRIPTION_ID"]
        self.group = env["AZURE_RESOURCE_GROUP"]
        self.batch = env["SERVICE_BATCH_NAME"]
        self.processor = env["SERVICE_ORDER_PROCESSOR_NAME"]
        self.apps_timeout = seconds("APPS_TIMEOUT", 300.0)
        self.run_timeout = seconds("BATCH_RUN_TIMEOUT", 90.0)
        self.interval = seconds("POLL_INTERVAL", 10.0)
        self.workspace = os.environ.get("AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID", "").strip() or (
            "<azd env get-value AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID>"
        )
        self.azure = Azure(AzdToken(os.environ.get("AZURE_TENANT_ID", "").strip()))

    def app_path(self, app: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/Microsoft.App/containerApps/{app}"

    # 1. Both apps' latest revisions running and healthy.

    def latest_revision(self, app: str) -> Revision:
        found = self.azure.arm("GET", self.app_path(app)) or {}
        app_properties = found.get("properties") or {}
        name = app_properties.get("latestRevisionName") or None
        properties: Dict[str, Any] = {}
        if name:
            # A revision that has just been replaced may be gone (404): seen as unknown.
            revision = self.azure.arm("GET", f"{self.app_path(app)}/revisions/{name}", allow_not_found=True)
            properties = (revision or {}).get("properties") or {}
        return Revision(app, app_properties, name, properties)

    def wait_until_ready(self) -> Tuple[Revision, Revision]:
        self.out.say(f"apps: waiting up to {self.apps_timeout:g} s for the latest revisions to be running and healthy")
        deadline = Deadline(self.apps_timeout)
        seen: Dict[str, str] = {}
        while True:
            revisions = (self.latest_revision(self.batch), self.latest_revision(self.processor))
            for revision in revisions:
                if seen.get(revision.app) != f"{revision.label} {revision.state}":
                    self.out.say(f"apps: {revision.label} is {revision.state}")
                    seen[revision.app] = f"{revision.label} {revision.state}"
            if all(revision.ready for revision in revisions):
                return revisions
            if deadline.passed():
                states = ", ".join(f"{r.label} is {r.state}" for r in revisions)
                raise HookFailure(
                    f"after {self.apps_timeout:g} s (APPS_TIMEOUT): {states} (want Running/Healthy)",
                    self.apps_logs_hint(),
                )
            time.sleep(self.interval)

    def apps_logs_hint(self) -> str:
        apps = f"'{self.batch}', '{self.processor}'"
        console = (
            f"ContainerAppConsoleLogs_CL | where ContainerAppName_s in ({apps}) "
            "| project TimeGenerated, RevisionName_s, Log_s | order by TimeGenerated desc | take 100"
        )
        system = (
            f"ContainerAppSystemLogs_CL | where ContainerAppName_s in ({apps}) "
            "| project TimeGenerated, RevisionName_s, Reason_s, Log_s | order by TimeGenerated desc | take 100"
        )
        return (
            "Their logs in Log Analytics (the apps' own, then Container Apps' events), with the Azure CLI "
            "or in the Azure portal (the workspace, Logs):\n"
            f'  az monitor log-analytics query --workspace {self.workspace} --output table --analytics-query "{console}"\n'
            f'  az monitor log-analytics query --workspace {self.workspace} --output table --analytics-query "{system}"'
        )

    # 2. batch's latest "run finished" summary says every order is stored.

    def read_summaries(self, batch: Revision) -> List[Dict[str, Any]]:
        """The "run finished" summaries in the tail of the console log of the first
        replica of batch's revision (batch runs exactly one), oldest first."""
        endpoint = str(batch.app_properties.get("eventStreamEndpoint") or "")
        if "/subscriptions/" not in endpoint:
            raise HookFailure(f"{batch.app} has no log stream endpoint (properties.eventStreamEndpoint)")
        base = endpoint[: endpoint.index("/subscriptions/")]
        revision_path = f"{self.app_path(batch.app)}/revisions/{batch.name}"
        replicas = (self.azure.arm("GET", f"{revision_path}/replicas") or {}).get("value") or []
        if not replicas:
            raise HookFailure(f"{batch.name} has no replica yet")
        replica = replicas[0]
        containers = (batch.properties.get("template") or {}).get("containers") or (
            (replica.get("properties") or {}).get("containers") or []
        )
        if not containers:
            raise HookFailure(f"{batch.name} names no container")
        # The log stream takes a token of its own, from the app (POST .../getAuthToken).
        grant = self.azure.arm("POST", f"{self.app_path(batch.app)}/getAuthToken") or {}
        token = str((grant.get("properties") or {}).get("token") or "")
        if not token:
            raise HookFailure(f"getAuthToken of {batch.app} returned no token")
        segments = [
            "subscriptions", self.subscription, "resourceGroups", self.group, "containerApps", batch.app,
            "revisions", str(batch.name), "replicas", str(replica.get("name")), "containers",
            str(containers[0].get("name")), "logstream",
        ]
        query = urllib.parse.urlencode({"follow": "false", "output": "json", "tailLines": TAIL_LINES})
        url = f"{base}/{'/'.join(urllib.parse.quote(s, safe='') for s in segments)}?{query}"
        answer = self.azure.send("GET", url, lambda: token)
        return summaries_in(answer.text() if answer is not None else "")

    def check_batch_run(self, batch: Revision) -> None:
        self.out.say(f"orders: waiting up to {self.run_timeout:g} s for batch to finish a run")
        deadline = Deadline(self.run_timeout)
        latest: Optional[Dict[str, Any]] = None
        problem = ""
        while True:
            try:
                summaries = self.read_summaries(batch)
                problem = ""
            except HookFailure as failure:
                # Not readable yet (no replica, a log stream that does not answer): try again.
                summaries, problem = [], failure.message
            if summaries:
                latest = summaries[-1]
                if self.judge(latest, summaries):
                    return
            if deadline.passed():
                hint = (
                    "batch's logs (live):\n"
                    f"  az containerapp logs show --name {self.batch} --resource-group {self.group} --type console --tail 100"
                )
                if latest is None:
                    why = f" (last problem: {problem})" if problem else ""
                    raise HookFailure(
                        f"no '{SUMMARY_MESSAGE}' line from batch ({batch.label}) in {self.run_timeout:g} s "
                        f"(BATCH_RUN_TIMEOUT){why}: is the cron component scoped to it, and its sidecar up?",
                        hint,
                    )
                raise HookFailure(
                    f"batch's latest run did not store every order: {describe(latest)}",
                    f"Its summary: {json.dumps(latest)}\n{hint}",
                )
            time.sleep(self.interval)

    def judge(self, latest: Dict[str, Any], summaries: List[Dict[str, Any]]) -> bool:
        """True when the latest summary shows every order stored; raises when it shows
        orders missing; False while there is nothing to decide on yet."""
        outcome = latest.get("outcome")
        if outcome not in ("completed", "unchanged"):
            return False
        read, inserted, present = counts(latest)
        # Copies of an order the file gives the same way more than once are stored once.
        duplicates = latest.get("duplicates", 0) if isinstance(latest.get("duplicates"), int) else 0
        self.out.say(f"orders: latest run: {describe(latest)}")
        if outcome == "completed":
            if inserted + present + duplicates != read:
                raise HookFailure(
                    f"batch's run completed but stored {inserted + present} of {read} orders: {json.dumps(latest)}",
                    "batch's logs name each order it could not store:\n"
                    f"  az containerapp logs show --name {self.batch} --resource-group {self.group} --type console --tail 100",
                )
            self.out.say(f"orders: stored: all {read} orders of the file are in the database ({inserted} new, {present} already there)")
            return True
        settling = [s for s in summaries if s.get("outcome") not in ("unchanged", None)]
        if settling and settling[-1].get("outcome") != "completed":
            # A file is skipped once nothing of it is left to retry, also when orders of it
            # were rejected or in conflict: then not every order is stored.
            raise HookFailure(
                f"batch skips the file, but the run that settled it did not store every order: {describe(settling[-1])}",
                "batch's logs name each order it could not store:\n"
                f"  az containerapp logs show --name {self.batch} --resource-group {self.group} --type console --tail 100",
            )
        if settling:
            self.out.say(f"orders: the run that stored them: {describe(settling[-1])}")
        self.out.say(f"orders: stored: the file ({read} orders) was stored completely by an earlier run; nothing was left to send")
        return True


def counts(summary: Dict[str, Any]) -> Tuple[int, int, int]:
    """read, inserted and already_present of a summary, which must be whole numbers."""
    values = [summary.get(key) for key in ("read", "inserted", "already_present")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise HookFailure(f"cannot read batch's summary (read, inserted, already_present): {json.dumps(summary)}")
    return values[0], values[1], values[2]


def describe(summary: Dict[str, Any]) -> str:
    """A summary, readably."""
    fields = ("read", "inserted", "already_present", "conflicts", "rejected", "duplicates", "skipped", "deferred")
    figures = ", ".join(f"{field.replace('_', ' ')} {summary.get(field, '?')}" for field in fields)
    return f"outcome {summary.get('outcome', '?')} at {summary.get('timestamp', '?')}: {figures}"


UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def embedded_object(text: str) -> Optional[Dict[str, Any]]:
    """The JSON object that starts at the first "{" of a log line, read as it is, with
    \\uXXXX escapes undone (as `az containerapp logs show` does for text output), or
    with escaped quotes undone; None when there is none."""
    start = text.find("{")
    if start < 0:
        return None
    rest = text[start:]
    unescaped = UNICODE_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), rest)
    for variant in (rest, unescaped, unescaped.replace('\\"', '"')):
        try:
            found, _ = json.JSONDecoder().raw_decode(variant)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def app_records(line: str) -> Iterator[Dict[str, Any]]:
    """The JSON objects an app logged, in one line of the log stream: the line itself, or
    the strings of a JSON envelope around it (output=json wraps each line, with its time),
    or what follows a text prefix (output=text)."""
    try:
        whole = json.loads(line)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        if "message" in whole:
            yield whole
            return
        for value in whole.values():
            if isinstance(value, dict) and "message" in value:
                yield value
        candidates = [value for value in whole.values() if isinstance(value, str)]
    else:
        candidates = [line]
    for candidate in candidates:
        found = embedded_object(candidate)
        if found is not None:
            yield found


def summaries_in(log: str) -> List[Dict[str, Any]]:
    """batch's "run finished" summaries in a piece of its log, oldest first."""
    return [
        record
        for line in log.splitlines()
        for record in app_records(line.strip())
        if record.get("message") == SUMMARY_MESSAGE
    ]


def smoke_test(out: Output) -> None:
    smoke = Smoke(out)
    batch, processor = smoke.wait_until_ready()
    smoke.check_batch_run(batch)
    out.say(f"OK: {batch.label} and {processor.label} are running and healthy, and batch's orders are stored")
    workbook = os.environ.get("AZURE_WORKBOOK_URL", "").strip()
    if workbook:
        out.say(f"dashboard (runs, requests, errors, slowest traces): {workbook}")


def main() -> int:
    return run("postdeploy", smoke_test)


if __name__ == "__main__":
    raise SystemExit(main())
