"""infra/hooks/postdeploy.py (the smoke test), run as azd runs it, against a fake Azure:
it waits for both apps' latest revisions to be running and healthy, then reads batch's
console log through the Container Apps log stream and checks its latest run summary."""

import json

import pytest

from hooks_support import APPS, API_VERSION, LOG_STREAM_TOKEN, RG, SUB, Reply, arm_error, run_hook

BATCH, PROCESSOR = "ca-batch-abc", "ca-order-processor-abc"
BATCH_REVISION, PROCESSOR_REVISION = f"{BATCH}--azd-1700000001", f"{PROCESSOR}--azd-1700000002"
REPLICA = f"{BATCH_REVISION}-5d9c7b8f6-x7k2p"
LOG_STREAM = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/containerApps/{BATCH}/revisions/{BATCH_REVISION}"
    f"/replicas/{REPLICA}/containers/batch/logstream"
)

ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-00000000000t",
    "AZURE_RESOURCE_GROUP": RG,
    "SERVICE_BATCH_NAME": BATCH,
    "SERVICE_ORDER_PROCESSOR_NAME": PROCESSOR,
    "AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID": "11111111-2222-3333-4444-555555555555",
}


def app_path(app):
    return f"{APPS}/containerApps/{app}"


def summary(outcome="completed", read=10, inserted=10, already_present=0, **more):
    line = {
        "timestamp": "2026-12-01T10:00:00.123456Z",
        "level": "INFO",
        "message": "run finished",
        "trigger": "cron",
        "outcome": outcome,
        "read": read,
        "submitted": read,
        "inserted": inserted,
        "already_present": already_present,
        "conflicts": 0,
        "rejected": 0,
        "skipped": 0,
        "deferred": 0,
        "duration_ms": 23,
        "target": "batch::runner",
    }
    line.update(more)
    return line


def stream(*records):
    """A log stream answer (output=json): one envelope per line around the app's line."""
    lines = [{"TimeStamp": "2026-12-01T10:00:00", "Log": "Connecting to the container 'batch'..."}]
    lines += [{"TimeStamp": "2026-12-01T10:00:01", "Log": json.dumps(r) if isinstance(r, dict) else r} for r in records]
    return Reply(200, "".join(json.dumps(line) + "\n" for line in lines))


def revision(running="Running", health="Healthy", container="batch"):
    return Reply(body={"properties": {"runningState": running, "healthState": health,
                                      "template": {"containers": [{"name": container, "image": "x"}]}}})


@pytest.fixture
def azure(fake):
    """A deployment in good order; tests change what they need."""
    fake.on("GET", app_path(BATCH), [Reply(body={"properties": {
        "latestRevisionName": BATCH_REVISION,
        "eventStreamEndpoint": f"{fake.url}/subscriptions/{SUB}/resourceGroups/{RG}/containerApps/{BATCH}/eventstream",
    }})])
    fake.on("GET", app_path(PROCESSOR), [Reply(body={"properties": {"latestRevisionName": PROCESSOR_REVISION}})])
    fake.on("GET", f"{app_path(BATCH)}/revisions/{BATCH_REVISION}", [revision()])
    fake.on("GET", f"{app_path(PROCESSOR)}/revisions/{PROCESSOR_REVISION}", [revision(container="order-processor")])
    fake.on("GET", f"{app_path(BATCH)}/revisions/{BATCH_REVISION}/replicas",
            [Reply(body={"value": [{"name": REPLICA, "properties": {"containers": [{"name": "batch"}]}}]})])
    fake.on("POST", f"{app_path(BATCH)}/getAuthToken",
            [Reply(body={"properties": {"token": LOG_STREAM_TOKEN, "expires": "2099-01-01T00:00:00Z"}})])
    fake.on("GET", LOG_STREAM, [stream("cron tick", summary())], token=LOG_STREAM_TOKEN)
    return fake


def test_passes_on_healthy_revisions_and_a_run_that_stored_every_order(azure, tools):
    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 10 orders of the file are in the database (10 new, 0 already there)" in result.stdout
    assert f"OK: {BATCH_REVISION} and {PROCESSOR_REVISION} are running and healthy" in result.stdout
    # The log stream is read as `az containerapp logs show` reads it, with the app's own token.
    (read,) = azure.seen("GET", LOG_STREAM)
    assert read.query == {"follow": "false", "output": "json", "tailLines": "300"}
    assert read.headers["Authorization"] == f"Bearer {LOG_STREAM_TOKEN}"
    arm = [r for r in azure.requests if r.path != LOG_STREAM]
    assert all(r.query.get("api-version") == API_VERSION for r in arm)
    # Nothing is restarted any more.
    assert all(r.method == "GET" or r.path.endswith("/getAuthToken") for r in azure.requests)
    assert not tools.az_was_run()


def test_waits_while_the_revisions_are_activating(azure, tools):
    azure.on("GET", f"{app_path(BATCH)}/revisions/{BATCH_REVISION}",
             [revision("Activating", "None"), revision("Activating", "None"), revision()])
    azure.on("GET", f"{app_path(PROCESSOR)}/revisions/{PROCESSOR_REVISION}",
             [revision("Running", "Unhealthy", "order-processor")] * 3 + [revision("RunningAtMaxScale", "Healthy", "order-processor")])

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout
    assert said.index(f"{BATCH_REVISION} is Activating/None") < said.index(f"{BATCH_REVISION} is Running/Healthy")
    assert said.index(f"{PROCESSOR_REVISION} is Running/Unhealthy") < said.index(f"{PROCESSOR_REVISION} is RunningAtMaxScale/Healthy")
    assert said.count(f"{BATCH_REVISION} is Activating/None") == 1
    assert len(azure.seen("GET", f"{app_path(PROCESSOR)}/revisions/{PROCESSOR_REVISION}")) == 4
    # Orders are looked at only once both are ready.
    assert len(azure.seen("GET", LOG_STREAM)) == 1


def test_fails_with_the_summary_when_orders_are_missing(azure, tools):
    azure.on("GET", LOG_STREAM, [stream(summary(read=10, inserted=7, already_present=0))], token=LOG_STREAM_TOKEN)

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "batch's run completed but stored 7 of 10 orders" in result.stderr
    assert '"inserted": 7' in result.stderr


def test_a_file_stored_by_an_earlier_run_passes(azure, tools):
    azure.on("GET", LOG_STREAM, [stream(summary(inserted=10), summary("unchanged", inserted=0, submitted=0))],
             token=LOG_STREAM_TOKEN)

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "the run that stored them: outcome completed" in result.stdout
    assert "was stored completely by an earlier run" in result.stdout


def test_a_file_settled_with_rejected_orders_fails_though_batch_skips_it(azure, tools):
    settled = summary("partial", inserted=9, rejected=1)
    azure.on("GET", LOG_STREAM, [stream(settled, summary("unchanged", inserted=0, submitted=0))],
             token=LOG_STREAM_TOKEN)

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "the run that settled it did not store every order" in result.stderr
    assert "rejected 1" in result.stderr


def test_copies_of_an_order_count_as_stored_and_the_dashboard_is_named(azure, tools):
    azure.on("GET", LOG_STREAM, [stream(summary(inserted=9, duplicates=1))], token=LOG_STREAM_TOKEN)
    url = "https://portal.azure.com/#resource/workbooks/abc"

    result = run_hook("postdeploy.py", azure, tools, {**ENV, "AZURE_WORKBOOK_URL": url})

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"dashboard (runs, requests, errors, slowest traces): {url}" in result.stdout


def test_waits_for_a_run_while_there_is_none_or_it_is_partial(azure, tools):
    azure.on("GET", f"{app_path(BATCH)}/revisions/{BATCH_REVISION}/replicas",
             [Reply(body={"value": []}), Reply(body={"value": [{"name": REPLICA}]})])
    azure.on("GET", LOG_STREAM, [stream("starting"), stream(summary("partial", inserted=0, deferred=10)),
                                 stream(summary("partial", inserted=0), summary(inserted=10))], token=LOG_STREAM_TOKEN)

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(azure.seen("GET", LOG_STREAM)) == 3
    assert "all 10 orders of the file are in the database" in result.stdout


def test_unhealthy_revisions_fail_after_the_time_limit_with_where_to_look(azure, tools):
    azure.on("GET", f"{app_path(PROCESSOR)}/revisions/{PROCESSOR_REVISION}", [revision("Running", "Unhealthy")])

    result = run_hook("postdeploy.py", azure, tools, {**ENV, "APPS_TIMEOUT": "0.2"})

    assert result.returncode == 1
    assert f"{PROCESSOR_REVISION} is Running/Unhealthy (want Running/Healthy)" in result.stderr
    assert "ContainerAppSystemLogs_CL" in result.stderr
    assert not azure.seen("GET", LOG_STREAM)


def test_no_run_summary_in_time_fails_saying_so(azure, tools):
    azure.on("GET", LOG_STREAM, [stream("listening on 0.0.0.0:6001")], token=LOG_STREAM_TOKEN)

    result = run_hook("postdeploy.py", azure, tools, {**ENV, "BATCH_RUN_TIMEOUT": "0.2"})

    assert result.returncode == 1
    assert f"no 'run finished' line from batch ({BATCH_REVISION})" in result.stderr


def test_a_forbidden_answer_is_reported_at_once(azure, tools):
    azure.on("GET", app_path(BATCH), [arm_error(403, "AuthorizationFailed", "no read access to the app")])

    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 1
    assert "403 AuthorizationFailed: no read access to the app" in result.stderr
    assert len(azure.seen("GET", app_path(BATCH))) == 1


def test_missing_settings_are_named(fake, tools):
    result = run_hook("postdeploy.py", fake, tools, {**ENV, "SERVICE_BATCH_NAME": None, "AZURE_SUBSCRIPTION_ID": None})

    assert result.returncode == 1
    assert "not set: AZURE_SUBSCRIPTION_ID, SERVICE_BATCH_NAME" in result.stderr
    assert not fake.requests


def test_the_token_comes_from_azd_never_from_az(azure, tools):
    result = run_hook("postdeploy.py", azure, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert tools.azd_calls() == [["auth", "token", "--output", "json", "--scope", "https://management.azure.com//.default",
                                  "--tenant-id", ENV["AZURE_TENANT_ID"]]]
    assert not tools.az_was_run()
