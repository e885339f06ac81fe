"""infra/hooks/bootstrap.py (order-processor's postpublish hook), run as azd runs it,
against a fake Azure: it points the bootstrap job at the pushed image, starts it and
waits for success; failures say which execution and how to read its logs."""

import copy

from hooks_support import APPS, ARM_SCOPE, API_VERSION, SUB, TENANT, Reply, arm_error, run_hook

JOB = "job-bootstrap-abc"
JOB_PATH = f"{APPS}/jobs/{JOB}"
NEW_IMAGE = "crabc.azurecr.io/dapr-rust-aca/order-processor-dev:azd-deploy-1700000000"
OLD_IMAGE = "mcr.microsoft.com/azuredocs/containerapps-helloworld:latest"
EXECUTION = f"{JOB}-x1y2z3"
EXECUTION_PATH = f"{JOB_PATH}/executions/{EXECUTION}"
WORKSPACE = "11111111-2222-3333-4444-555555555555"

ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_TENANT_ID": TENANT,
    "AZURE_RESOURCE_GROUP": "rg-test",
    "BOOTSTRAP_JOB_NAME": JOB,
    "SERVICE_ORDER_PROCESSOR_IMAGE_NAME": NEW_IMAGE,
    "AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID": WORKSPACE,
}


def job(image, state="Succeeded"):
    return {
        "id": JOB_PATH,
        "name": JOB,
        "properties": {
            "provisioningState": state,
            "configuration": {"triggerType": "Manual", "replicaTimeout": 600},
            "template": {
                "containers": [
                    {
                        "name": "bootstrap",
                        "image": image,
                        "args": ["bootstrap"],
                        "env": [{"name": "APP_ROLE", "value": "id-orders-data"}],
                        "resources": {"cpu": 0.25, "memory": "0.5Gi"},
                    }
                ]
            },
        },
    }


def execution(status):
    return {"id": EXECUTION_PATH, "name": EXECUTION, "properties": {"status": status}}


def started():
    return Reply(202, {"id": EXECUTION_PATH, "name": EXECUTION}, {"Location": "http://unused.invalid/op"})


def test_points_the_job_at_the_new_image_starts_it_and_waits_for_success(fake, tools):
    # The GET before the update, then two while the update is in progress, then done.
    fake.on("GET", JOB_PATH, [Reply(body=job(OLD_IMAGE)), Reply(body=job(NEW_IMAGE, "InProgress")),
                              Reply(body=job(NEW_IMAGE, "InProgress")), Reply(body=job(NEW_IMAGE))])
    fake.on("PATCH", JOB_PATH, [Reply(202, None, {"Location": "http://unused.invalid/op"})])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [arm_error(404, "ResourceNotFound", "not yet"), Reply(body=execution("Running")),
                                    Reply(body=execution("Running")), Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    patch = fake.seen("PATCH", JOB_PATH)[0].json()
    expected = copy.deepcopy(job(NEW_IMAGE)["properties"]["template"])
    assert patch == {"properties": {"template": expected}}
    order = [(r.method, r.path) for r in fake.requests]
    assert order.index(("PATCH", JOB_PATH)) < order.index(("POST", f"{JOB_PATH}/start"))
    # Started only once the update is done, and only once.
    assert order[: order.index(("POST", f"{JOB_PATH}/start"))].count(("GET", JOB_PATH)) == 4
    assert len(fake.seen("POST", f"{JOB_PATH}/start")) == 1
    assert len(fake.seen("GET", EXECUTION_PATH)) == 4
    assert all(r.query.get("api-version") == API_VERSION for r in fake.requests)
    for line in (f"started execution {EXECUTION}", "not visible yet", f"{EXECUTION} is Running", f"{EXECUTION} is Succeeded"):
        assert line in result.stdout
    assert result.stdout.count(f"{EXECUTION} is Running") == 1, "a state is said once, when it changes"


def test_a_job_that_runs_the_image_already_is_only_started(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert not fake.seen("PATCH")
    assert "already runs this image" in result.stdout


def test_a_failed_execution_stops_azd_naming_it_with_the_command_for_its_logs(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Running")), Reply(body=execution("Failed"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 1
    assert f"execution {EXECUTION} ended Failed" in result.stderr
    assert f"az monitor log-analytics query --workspace {WORKSPACE}" in result.stderr
    assert (
        f"ContainerAppConsoleLogs_CL | where ContainerJobName_s == '{JOB}' "
        f"and ContainerGroupName_s startswith '{EXECUTION}'"
    ) in result.stderr


def test_an_execution_that_does_not_finish_in_time_fails(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Running"))])

    result = run_hook("bootstrap.py", fake, tools, {**ENV, "BOOTSTRAP_TIMEOUT": "0.3"})

    assert result.returncode == 1
    assert f"execution {EXECUTION} is still Running after 0.3 s (BOOTSTRAP_TIMEOUT)" in result.stderr
    assert "ContainerAppConsoleLogs_CL" in result.stderr


def test_throttling_server_errors_and_dropped_connections_are_retried(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "0"}),
                              arm_error(500, "InternalServerError", "oops"), Reply(drop=True), Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [arm_error(503, "ServiceUnavailable", "busy"), started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake.seen("GET", JOB_PATH)) == 4
    assert len(fake.seen("POST", f"{JOB_PATH}/start")) == 2


def test_a_forbidden_answer_is_reported_with_azures_message_and_not_retried(fake, tools):
    message = f"The client 'someone' does not have authorization to perform action 'Microsoft.App/jobs/read' over scope '{JOB_PATH}'."
    fake.on("GET", JOB_PATH, [arm_error(403, "AuthorizationFailed", message)])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 1
    assert f"403 AuthorizationFailed: {message}" in result.stderr
    assert len(fake.seen("GET", JOB_PATH)) == 1


def test_errors_that_persist_give_up_after_a_few_tries(fake, tools):
    fake.on("GET", JOB_PATH, [arm_error(500, "InternalServerError", "still broken")])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 1
    assert "still failing after 6 tries: 500 InternalServerError: still broken" in result.stderr
    assert len(fake.seen("GET", JOB_PATH)) == 6


def test_missing_settings_are_named_before_anything_is_asked(fake, tools):
    result = run_hook("bootstrap.py", fake, tools, {**ENV, "BOOTSTRAP_JOB_NAME": None, "SERVICE_ORDER_PROCESSOR_IMAGE_NAME": ""})

    assert result.returncode == 1
    assert "not set: BOOTSTRAP_JOB_NAME, SERVICE_ORDER_PROCESSOR_IMAGE_NAME" in result.stderr
    assert not fake.requests
    assert not tools.azd_calls()


def test_a_bad_time_limit_is_named(fake, tools):
    result = run_hook("bootstrap.py", fake, tools, {**ENV, "BOOTSTRAP_TIMEOUT": "five minutes"})

    assert result.returncode == 1
    assert "BOOTSTRAP_TIMEOUT='five minutes' is not a number of seconds" in result.stderr


def test_the_token_comes_from_azd_for_resource_manager_and_the_tenant_never_from_az(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Running")), Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    # One token, valid for long, serves every request.
    assert tools.azd_calls() == [["auth", "token", "--output", "json", "--scope", ARM_SCOPE, "--tenant-id", TENANT]]
    assert all(r.headers["Authorization"] == "Bearer fake-arm-token-1" for r in fake.requests)
    assert not tools.az_was_run()


def test_without_a_tenant_azd_picks_it(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, {**ENV, "AZURE_TENANT_ID": None})

    assert result.returncode == 0, result.stdout + result.stderr
    assert tools.azd_calls()[0] == ["auth", "token", "--output", "json", "--scope", ARM_SCOPE]


def test_a_token_about_to_expire_is_renewed_through_azd(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    # Expired long ago: within the renewal margin at every request.
    result = run_hook("bootstrap.py", fake, tools, {**ENV, "FAKE_AZD_EXPIRES": "2001-01-01T00:00:00+00:00"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(tools.azd_calls()) == len(fake.requests) == 3
    assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer fake-arm-token-{n}" for n in (1, 2, 3)]


def test_a_rejected_token_is_renewed_once(fake, tools):
    fake.on("GET", JOB_PATH, [arm_error(401, "ExpiredAuthenticationToken", "expired"), Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(tools.azd_calls()) == 2
    assert fake.seen("GET", JOB_PATH)[1].headers["Authorization"] == "Bearer fake-arm-token-2"


def test_azd_signed_out_is_reported_with_what_to_do(fake, tools):
    result = run_hook("bootstrap.py", fake, tools, {**ENV, "FAKE_AZD_FAIL": "1"})

    assert result.returncode == 1
    assert "'azd auth token' failed (exit code 1): ERROR: not logged in" in result.stderr
    assert "azd auth login" in result.stderr
    assert not fake.requests
    assert not tools.az_was_run()


def test_it_runs_from_any_working_directory(fake, tools, tmp_path):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    fake.on("POST", f"{JOB_PATH}/start", [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
