"""azd `postpublish` hook of order-processor (azure.yaml): the database bootstrap.

azd runs it after it has pushed order-processor's new image to the registry and before it
deploys that image. It starts an execution of the bootstrap Container Apps job
(infra/modules/bootstrap-job.bicep) with that image, which creates the app's PostgreSQL
role and database as the server's Microsoft Entra administrator from inside the VNet, and
waits until it has succeeded. The image goes in the start request itself (Jobs_Start takes
a JobExecutionTemplate that overrides the job's template for that one execution): the job
is never updated, so no job update has to be waited for, which would eat into azd's time
limit for the publish step (AZD_DEPLOY_TIMEOUT). The execution keeps everything else the
job's container has (name, command, arguments, environment, resources), read from the job.
It stops azd (exit code 1) when the execution fails, stops or takes too long, saying which
execution and how to read its logs. The bootstrap is idempotent: running this again is
always safe, and starts a new execution (`azd hooks run postpublish --service order-processor`).

Environment (the azd environment: outputs of infra/main.bicep, and the image azd pushed):
  AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, BOOTSTRAP_JOB_NAME,
  SERVICE_ORDER_PROCESSOR_IMAGE_NAME; optional: AZURE_TENANT_ID (the tenant azd asks a
  token for), AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID (for the log query it prints).
Time limits in seconds: BOOTSTRAP_TIMEOUT (300) for the execution; POLL_INTERVAL (10)
between look-ups; RETRY_DELAY (2), the first back-off of a request Azure throttled or
failed (it doubles, up to 30).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

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
# What one execution's container may say (JobExecutionContainer, Microsoft.App 2026-01-01,
# Jobs.json): everything else a job's container has (probes, volumeMounts) stays the job's.
EXECUTION_CONTAINER_FIELDS = ("name", "image", "command", "args", "env", "resources")
# Of a container's resources, what a request may set (ephemeralStorage is read-only).
EXECUTION_RESOURCE_FIELDS = ("cpu", "memory")


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
    job = azure.arm("GET", job_path)
    template, left_out = execution_template(job, job_name, image)
    for note in left_out:
        out.say(f"note: {note}")
    execution = start_execution(azure, job_path, job_name, template)
    out.say(f"started execution {execution} with the new image (waiting up to {timeout:g} s)")
    wait_for_execution(azure, out, job_path, job_name, execution, timeout, interval)
    out.say(f"OK: execution {execution} succeeded: the app's database role is in place")


def containers_of(job: Any, job_name: str) -> List[Dict[str, Any]]:
    containers = (((job or {}).get("properties") or {}).get("template") or {}).get("containers")
    if not containers or not isinstance(containers, list):
        raise HookFailure(f"job {job_name} has no container in properties.template.containers")
    return containers


def execution_container(container: Dict[str, Any], left_out: List[str]) -> Dict[str, Any]:
    """A job's container as one execution's container: what the execution template can
    say, as the job says it; the rest is named in left_out."""
    result = {key: container[key] for key in EXECUTION_CONTAINER_FIELDS if container.get(key) is not None}
    resources = container.get("resources")
    if isinstance(resources, dict):
        result["resources"] = {key: resources[key] for key in EXECUTION_RESOURCE_FIELDS if resources.get(key) is not None}
        if not result["resources"]:
            del result["resources"]
    dropped = sorted(key for key, value in container.items() if key not in EXECUTION_CONTAINER_FIELDS and value)
    if dropped:
        left_out.append(
            f"container {container.get('name')}: {', '.join(dropped)} cannot be passed to one execution "
            "(a start request takes name, image, command, args, env and resources only)"
        )
    return result


def execution_template(job: Any, job_name: str, image: str) -> Tuple[Dict[str, Any], List[str]]:
    """The JobExecutionTemplate that runs the job's containers as they are, the first one
    with `image`; and what of the job's containers it cannot carry."""
    left_out: List[str] = []
    containers = [execution_container(container, left_out) for container in containers_of(job, job_name)]
    if not containers[0].get("name"):
        raise HookFailure(f"job {job_name}: its container has no name")
    containers[0]["image"] = image
    template: Dict[str, Any] = {"containers": containers}
    init = job["properties"]["template"].get("initContainers")
    if isinstance(init, list) and init:
        template["initContainers"] = [execution_container(container, left_out) for container in init]
    return template, left_out


def start_execution(azure: Azure, job_path: str, job_name: str, template: Dict[str, Any]) -> str:
    """Starts an execution of the job with `template` for it alone; returns its name."""
    started = azure.arm("POST", f"{job_path}/start", template) or {}
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
