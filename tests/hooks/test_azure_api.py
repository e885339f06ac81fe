"""infra/hooks/azure_api.py's requests to Azure Resource Manager, against the fake: every
request that carries a body, and every POST, PUT or PATCH, sends JSON and says so, as ARM
requires; the fake refuses anything else the way ARM does."""

import json
import urllib.error
import urllib.request

import pytest

import azure_api
from hooks_support import APPS, ARM_TOKEN_PREFIX, FakeAzure, Reply

TOKEN = f"{ARM_TOKEN_PREFIX}unit"
JOB = f"{APPS}/jobs/job-bootstrap-abc"


class FixedToken:
    """A token source that needs no azd."""

    def get(self):
        return TOKEN

    def renew(self):
        return TOKEN


def client(fake):
    return azure_api.Azure(FixedToken(), base_url=fake.url, retry_delay=0.01, attempts=2)


def raw(fake, method, path, data, headers):
    request = urllib.request.Request(f"{fake.url}{path}?api-version=2026-01-01", data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def strict():
    """A fake whose refusals are the subject of the test (the shared fixture fails on any)."""
    server = FakeAzure().start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "data, headers, shown",
    [
        # What urllib sends for data=b"" without a Content-Type: a form.
        (b"", {}, "application/x-www-form-urlencoded"),
        (b"{}", {"Content-Type": "text/plain"}, "text/plain"),
        (None, {}, "<null>"),
    ],
)
def test_the_fake_refuses_a_post_that_is_not_json_as_arm_does(strict, data, headers, shown):
    strict.on("POST", f"{JOB}/start", [Reply(202, {"name": "x"})])

    status, body = raw(strict, "POST", f"{JOB}/start", data, headers)

    assert status == 415
    assert body == {"error": {"code": "UnsupportedMediaType",
                              "message": f"The content media type '{shown}' is not supported. "
                                         "Only 'application/json' is supported."}}
    assert len(strict.refused) == 1


def test_the_fake_refuses_a_json_typed_body_that_is_not_json(strict):
    strict.on("PATCH", JOB, [Reply(200, {})])

    status, body = raw(strict, "PATCH", JOB, b"", {"Content-Type": "application/json"})

    assert status == 400
    assert body["error"]["code"] == "InvalidRequestContent"


def test_the_fake_takes_json_with_a_charset(strict):
    strict.on("POST", f"{JOB}/start", [Reply(202, {"name": "x"})])

    status, _ = raw(strict, "POST", f"{JOB}/start", b"{}", {"Content-Type": "application/json; charset=utf-8"})

    assert status == 202
    assert not strict.refused


def test_a_post_without_parameters_sends_an_empty_json_object(fake):
    fake.on("POST", f"{JOB}/start", [Reply(202, {"name": "x"})])

    assert client(fake).arm("POST", f"{JOB}/start") == {"name": "x"}

    (seen,) = fake.seen("POST")
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == b"{}"


def test_a_body_is_sent_as_json(fake):
    fake.on("PATCH", JOB, [Reply(200, {})])
    body = {"properties": {"template": {"containers": [{"name": "bootstrap", "image": "é"}]}}}

    client(fake).arm("PATCH", JOB, body)

    (seen,) = fake.seen("PATCH")
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == body


def test_a_get_sends_no_body_and_no_content_type(fake):
    fake.on("GET", JOB, [Reply(200, {"name": "job"})])

    client(fake).arm("GET", JOB)

    (seen,) = fake.seen("GET")
    assert seen.body == b""
    assert "Content-Type" not in seen.headers
    assert seen.headers["Accept"] == "application/json"
