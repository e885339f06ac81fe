"""azd `postpublish` hook of order-processor (azure.yaml): the database bootstrap.

azd runs it after it has pushed order-processor's new image to the registry and before it
deploys that image. It points the bootstrap Container Apps job (infra/modules/bootstrap-job.bicep)
at that image, starts an execution, which creates the app's PostgreSQL role and database as the
server's Microsoft Entra administrator from inside the VNet, and waits until it has
succeeded. It stops azd (exit code 1) when the execution fails, stops or takes too long,
saying which execution and how to read its logs. The bootstrap is idempotent: running
this again is always safe (`azd hooks run postpublish --service order-processor`).

Environment (the azd environment: outputs of infra/main.bicep, and the image azd pushed):
  AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, BOOTSTRAP_JOB_NAME,
  SERVICE_ORDER_PROCESSOR_IMAGE_NAME; optional: AZURE_TENANT_ID (the tenant azd asks a
  token for), AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID (for the log query it prints).
Time limits in seconds: BOOTSTRAP_TIMEOUT (300) for the job's update and for the
execution; POLL_INTERVAL (10) between look-ups; RETRY_DELAY (2), the first back-off of
a request Azure throttled or failed (it doubles, up to 30).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional

# The shared module sits beside this script (sys.path[0]); importing it writes no
# __pycache__ into the project.
sys.dont_write_bytecode = True
from azure_api import Azure, AzdToken, Deadline, HookFailure, Output, require, run, seconds  # noqa: E402

REQUIRED = (
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "BOOTSTRAP_JOB_NAME",
    "SERVICE_ORDER_PROCESSOR_IMAGE_NAME",
)
WHY = (
    "They come from the azd environment: run this hook through azd (azd up, azd deploy, or "
    "'azd hooks run postpublish --service order-processor') after 'azd provision'."
)
# Execution states that will not turn into Succeeded.
ENDED_BADLY = ("Failed", "Stopped", "Degraded")


def main() -> int:
    return run("bootstrap", bootstrap)


def bootstrap(out: Output) -> None:
    env = require(REQUIRED, WHY)
    timeout = seconds("BOOTSTRAP_TIMEOUT", 300.0)
    interval = seconds("POLL_INTERVAL", 10.0)
    job_name = env["BOOTSTRAP_JOB_NAME"]
    image = env["SERVICE_ORDER_PROCESSOR_IMAGE_NAME"]
    job_path = (
        f"/subscriptions/{env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{env['AZURE_RESOURCE_GROUP']}"
        f"/providers/Microsoft.App/jobs/{job_name}"
    )
    azure = Azure(AzdToken(os.environ.get("AZURE_TENANT_ID", "").strip()))

    out.say(f"job {job_name} in {env['AZURE_RESOURCE_GROUP']}, image {image}")
    point_job_at(azure, out, job_path, job_name, image, timeout, interval)
    execution = start_execution(azure, job_path, job_name)
    out.say(f"started execution {execution} (waiting up to {timeout:g} s)")
    wait_for_execution(azure, out, job_path, job_name, execution, timeout, interval)
    out.say(f"OK: execution {execution} succeeded: the app's database role is in place")


def containers_of(job: Any, job_name: str) -> List[Dict[str, Any]]:
    containers = (((job or {}).get("properties") or {}).get("template") or {}).get("containers")
    if not containers or not isinstance(containers, list):
        raise HookFailure(f"job {job_name} has no container in properties.template.containers")
    return containers


def point_job_at(azure: Azure, out: Output, job_path: str, job_name: str, image: str, timeout: float, interval: float) -> None:
    """Makes the job's container run `image`, unless it already does."""
    job = azure.arm("GET", job_path)
    if containers_of(job, job_name)[0].get("image") == image:
        out.say("the job already runs this image")
        return
    template = job["properties"]["template"]
    template["containers"][0]["image"] = image
    out.say(f"pointing job {job_name} at the new image")
    # JSON merge patch: the template replaces the job's template, arrays whole.
    azure.arm("PATCH", job_path, {"properties": {"template": template}})

    deadline = Deadline(timeout)
    while True:
        job = azure.arm("GET", job_path)
        state = (job.get("properties") or {}).get("provisioningState") or "unknown"
        current = containers_of(job, job_name)[0].get("image")
        if state == "Succeeded" and current == image:
            out.say("the job runs the new image")
            return
        if state in ("Failed", "Canceled"):
            raise HookFailure(f"updating job {job_name} to image {image} ended {state}")
        if deadline.passed():
            raise HookFailure(f"job {job_name} is still {state} (image {current}) {timeout:g} s after its update")
        time.sleep(interval)


def start_execution(azure: Azure, job_path: str, job_name: str) -> str:
    """Starts an execution of the job as it is; returns the execution's name."""
    started = azure.arm("POST", f"{job_path}/start") or {}
    name = started.get("name") or str(started.get("id") or "").rstrip("/").rpartition("/")[2]
    if not name:
        raise HookFailure(f"job {job_name} was started but Azure named no execution: {started}")
    return name


def wait_for_execution(
    azure: Azure, out: Output, job_path: str, job_name: str, execution: str, timeout: float, interval: float
) -> None:
    """Waits until the execution has succeeded; fails when it ends otherwise or times out."""
    deadline = Deadline(timeout)
    last: Optional[str] = "-"
    while True:
        # Just after the start the execution may not be visible yet (404).
        found = azure.arm("GET", f"{job_path}/executions/{execution}", allow_not_found=True)
        status = ((found or {}).get("properties") or {}).get("status") if found is not None else None
        if status != last:
            out.say(f"{execution} is {status or 'not visible yet'}")
            last = status
        if status == "Succeeded":
            return
        if status in ENDED_BADLY:
            raise HookFailure(
                f"bootstrap job {job_name}: execution {execution} ended {status}. "
                "Without it order-processor cannot reach its database.",
                logs_hint(job_name, execution),
            )
        if deadline.passed():
            raise HookFailure(
                f"bootstrap job {job_name}: execution {execution} is still {status or 'not visible'} "
                f"after {timeout:g} s (BOOTSTRAP_TIMEOUT).",
                logs_hint(job_name, execution),
            )
        time.sleep(interval)


def logs_hint(job_name: str, execution: str) -> str:
    """Where the execution's logs are, ready to paste."""
    workspace = os.environ.get("AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID", "").strip() or (
        "<azd env get-value AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID>"
    )
    query = (
        f"ContainerAppConsoleLogs_CL | where ContainerJobName_s == '{job_name}' "
        f"and ContainerGroupName_s startswith '{execution}' "
        "| project TimeGenerated, Log_s | order by TimeGenerated asc"
    )
    return (
        "Its logs reach Log Analytics a few minutes after the execution ends. The query "
        "(Azure portal: the Log Analytics workspace, Logs):\n"
        f"  {query}\n"
        "or with the Azure CLI:\n"
        f'  az monitor log-analytics query --workspace {workspace} --output table --analytics-query "{query}"'
    )


if __name__ == "__main__":
    raise SystemExit(main())
