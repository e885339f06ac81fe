"""infra/hooks/bootstrap.py (order-processor's postpublish hook), run as azd runs it,
against a fake Azure: it starts an execution of the bootstrap job with the pushed image in
the start request (the job itself is left as it is) and waits for success; failures say
which execution and how to read its logs. The fake refuses a start request the schema of
Jobs_Start does not allow, or whose containers are not the job's."""

import copy

from hooks_support import (
    APPS, ARM_SCOPE, API_VERSION, SUB, TENANT, Reply, arm_error, job_execution_template_problems, run_hook,
)

JOB = "job-bootstrap-abc"
JOB_PATH = f"{APPS}/jobs/{JOB}"
START_PATH = f"{JOB_PATH}/start"
NEW_IMAGE = "crabc.azurecr.io/dapr-rust-aca/order-processor-dev:azd-deploy-1700000000"
OLD_IMAGE = "mcr.microsoft.com/azuredocs/containerapps-helloworld:latest"
EXECUTION = f"{JOB}-x1y2z3"
EXECUTION_PATH = f"{JOB_PATH}/executions/{EXECUTION}"
WORKSPACE = "11111111-2222-3333-4444-555555555555"
ENV_VARS = [
    {"name": "DB_HOST", "value": "psql-abc.postgres.database.azure.com"},
    {"name": "APP_ROLE", "value": "id-orders-data"},
    {"name": "RUST_LOG", "value": "info"},
]

ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_TENANT_ID": TENANT,
    "AZURE_RESOURCE_GROUP": "rg-test",
    "BOOTSTRAP_JOB_NAME": JOB,
    "SERVICE_ORDER_PROCESSOR_IMAGE_NAME": NEW_IMAGE,
    "AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID": WORKSPACE,
}


def job(image=OLD_IMAGE, state="Succeeded", **container):
    """The job as ARM returns it (infra/modules/bootstrap-job.bicep after provision)."""
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
                        "env": ENV_VARS,
                        # ARM adds the read-only ephemeralStorage.
                        "resources": {"cpu": 0.25, "memory": "0.5Gi", "ephemeralStorage": "1Gi"},
                        **container,
                    }
                ]
            },
        },
    }


def expected_start(image=NEW_IMAGE):
    """The start request: the job's container as it is, with the pushed image."""
    return {
        "containers": [
            {
                "name": "bootstrap",
                "image": image,
                "args": ["bootstrap"],
                "env": ENV_VARS,
                "resources": {"cpu": 0.25, "memory": "0.5Gi"},
            }
        ]
    }


def execution(status):
    return {"id": EXECUTION_PATH, "name": EXECUTION, "properties": {"status": status}}


def started():
    return Reply(202, {"id": EXECUTION_PATH, "name": EXECUTION}, {"Location": "http://unused.invalid/op"})


def on_start(fake, script, the_job=None):
    """The start route, refusing (400, as ARM refuses an invalid body) a body that is not a
    JobExecutionTemplate for the job."""

    def check(seen):
        problems = job_execution_template_problems(seen.json(), the_job or job())
        return arm_error(400, "InvalidRequestContent", "; ".join(problems)) if problems else None

    fake.on("POST", START_PATH, script, check=check)


def test_starts_an_execution_with_the_pushed_image_and_waits_for_success(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(OLD_IMAGE))])
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [arm_error(404, "ResourceNotFound", "not yet"), Reply(body=execution("Running")),
                                    Reply(body=execution("Running")), Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    (start,) = fake.seen("POST", START_PATH)
    assert start.json() == expected_start()
    # One look at the job, then the start: the job is never updated, nor waited for.
    order = [(r.method, r.path) for r in fake.requests]
    assert order[:2] == [("GET", JOB_PATH), ("POST", START_PATH)]
    assert not [r for r in fake.requests if r.method in ("PATCH", "PUT")]
    assert len(fake.seen("GET", JOB_PATH)) == 1
    assert len(fake.seen("GET", EXECUTION_PATH)) == 4
    assert all(r.query.get("api-version") == API_VERSION for r in fake.requests)
    for line in (f"started execution {EXECUTION} with the new image", "not visible yet",
                 f"{EXECUTION} is Running", f"{EXECUTION} is Succeeded"):
        assert line in result.stdout
    assert result.stdout.count(f"{EXECUTION} is Running") == 1, "a state is said once, when it changes"
    assert "note:" not in result.stdout


def test_a_job_that_runs_the_image_already_is_started_the_same_way(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    on_start(fake, [started()], job(NEW_IMAGE))
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert fake.seen("POST", START_PATH)[0].json() == expected_start()


def test_running_it_again_starts_a_new_execution(fake, tools):
    second = f"{JOB}-a9b8c7"
    fake.on("GET", JOB_PATH, [Reply(body=job())])
    on_start(fake, [started(), Reply(202, {"id": f"{JOB_PATH}/executions/{second}", "name": second})])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])
    fake.on("GET", f"{JOB_PATH}/executions/{second}", [Reply(body={"name": second, "properties": {"status": "Succeeded"}})])

    first_run = run_hook("bootstrap.py", fake, tools, ENV)
    second_run = run_hook("bootstrap.py", fake, tools, ENV)

    assert first_run.returncode == 0 and second_run.returncode == 0, second_run.stdout + second_run.stderr
    assert f"OK: execution {second} succeeded" in second_run.stdout
    assert [r.json() for r in fake.seen("POST", START_PATH)] == [expected_start()] * 2
    assert not [r for r in fake.requests if r.method in ("PATCH", "PUT")]


def test_what_one_execution_cannot_be_given_is_left_out_and_said(fake, tools):
    the_job = job(volumeMounts=[{"volumeName": "scratch", "mountPath": "/tmp"}],
                  probes=[{"type": "Liveness", "tcpSocket": {"port": 80}}], command=["/order-processor"])
    fake.on("GET", JOB_PATH, [Reply(body=the_job)])
    on_start(fake, [started()], the_job)
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert fake.seen("POST", START_PATH)[0].json()["containers"][0]["command"] == ["/order-processor"]
    assert "note: container bootstrap: probes, volumeMounts cannot be passed to one execution" in result.stdout


def test_a_job_without_a_container_is_reported_before_anything_is_started(fake, tools):
    empty = job()
    empty["properties"]["template"]["containers"] = []
    fake.on("GET", JOB_PATH, [Reply(body=empty)])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 1
    assert f"job {JOB} has no container in properties.template.containers" in result.stderr
    assert not fake.seen("POST")


def test_the_fake_refuses_a_start_body_the_schema_or_the_job_does_not_allow():
    the_job = job()
    assert job_execution_template_problems(expected_start(), the_job) == []
    assert job_execution_template_problems({}, the_job) == [
        "containers: none, so the execution would run the job's own image"]
    wrong_name = copy.deepcopy(expected_start())
    wrong_name["containers"][0]["name"] = "order-processor"
    assert job_execution_template_problems(wrong_name, the_job) == [
        "containers: names ['order-processor'], but the job's are ['bootstrap']"]
    extra = copy.deepcopy(expected_start())
    extra["containers"][0]["probes"] = []
    extra["containers"][0]["resources"]["ephemeralStorage"] = "1Gi"
    extra["volumes"] = []
    problems = job_execution_template_problems(extra, the_job)
    assert len(problems) == 3, problems
    assert any("'volumes' was unexpected" in p for p in problems)
    assert any(p.startswith("containers/0:") and "'probes' was unexpected" in p for p in problems)
    assert any(p.startswith("containers/0/resources:") and "'ephemeralStorage'" in p for p in problems)


def test_a_refused_start_stops_azd_with_azures_message(fake, tools):
    renamed = job()
    renamed["properties"]["template"]["containers"][0]["name"] = "setup"
    fake.on("GET", JOB_PATH, [Reply(body=renamed)])
    # The fake checks against the job as provisioned (container "bootstrap").
    on_start(fake, [started()], job())

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 1
    assert "answered 400 InvalidRequestContent: containers: names ['setup'], but the job's are ['bootstrap']" in result.stderr
    fake.refused.clear()  # the refusal was the point of this test


def test_a_failed_execution_stops_azd_naming_it_with_the_command_for_its_logs(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job())])
    on_start(fake, [started()])
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
    fake.on("GET", JOB_PATH, [Reply(body=job())])
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Running"))])

    result = run_hook("bootstrap.py", fake, tools, {**ENV, "BOOTSTRAP_TIMEOUT": "0.3"})

    assert result.returncode == 1
    assert f"execution {EXECUTION} is still Running after 0.3 s (BOOTSTRAP_TIMEOUT)" in result.stderr
    assert "ContainerAppConsoleLogs_CL" in result.stderr


def test_throttling_server_errors_and_dropped_connections_are_retried(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "0"}),
                              arm_error(500, "InternalServerError", "oops"), Reply(drop=True), Reply(body=job(NEW_IMAGE))])
    on_start(fake, [arm_error(503, "ServiceUnavailable", "busy"), started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake.seen("GET", JOB_PATH)) == 4
    assert len(fake.seen("POST", START_PATH)) == 2


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
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Running")), Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    # One token, valid for long, serves every request.
    assert tools.azd_calls() == [["auth", "token", "--output", "json", "--scope", ARM_SCOPE, "--tenant-id", TENANT]]
    assert all(r.headers["Authorization"] == "Bearer fake-arm-token-1" for r in fake.requests)
    assert not tools.az_was_run()


def test_without_a_tenant_azd_picks_it(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, {**ENV, "AZURE_TENANT_ID": None})

    assert result.returncode == 0, result.stdout + result.stderr
    assert tools.azd_calls()[0] == ["auth", "token", "--output", "json", "--scope", ARM_SCOPE]


def test_a_token_about_to_expire_is_renewed_through_azd(fake, tools):
    fake.on("GET", JOB_PATH, [Reply(body=job(NEW_IMAGE))])
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    # Expired long ago: within the renewal margin at every request.
    result = run_hook("bootstrap.py", fake, tools, {**ENV, "FAKE_AZD_EXPIRES": "2001-01-01T00:00:00+00:00"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(tools.azd_calls()) == len(fake.requests) == 3
    assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer fake-arm-token-{n}" for n in (1, 2, 3)]


def test_a_rejected_token_is_renewed_once(fake, tools):
    fake.on("GET", JOB_PATH, [arm_error(401, "ExpiredAuthenticationToken", "expired"), Reply(body=job(NEW_IMAGE))])
    on_start(fake, [started()])
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
    on_start(fake, [started()])
    fake.on("GET", EXECUTION_PATH, [Reply(body=execution("Succeeded"))])

    result = run_hook("bootstrap.py", fake, tools, ENV, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
