"""Test doubles for the azd hooks in infra/hooks: a fake Azure (Resource Manager and the
Container Apps log stream) served by http.server on 127.0.0.1, fake `azd` and `az`
executables, and a runner that starts a hook the way azd does (the system's Python on the
script's path, the azd environment in the process environment).

The fake's answers are scripted per route and chosen by how many requests that route has
had, never by time, so the tests are deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

# In the test venv as a dependency of check-jsonschema (tools/requirements.txt).
import jsonschema

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "infra" / "hooks"
# Answers and request schemas from the Azure REST API specifications (README.md there).
ARM_EXAMPLES = Path(__file__).resolve().parent / "arm-examples"
API_VERSION = "2026-01-01"
ARM_SCOPE = "https://management.azure.com//.default"
ARM_TOKEN_PREFIX = "fake-arm-token-"
LOG_STREAM_TOKEN = "fake-log-stream-token"

SUB = "00000000-0000-0000-0000-000000000001"
TENANT = "00000000-0000-0000-0000-00000000000t"
RG = "rg-test"
APPS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.App"


class Reply:
    """One scripted answer: a status, a JSON (or text) body and headers; or, with
    drop=True, a connection closed without any answer."""

    def __init__(self, status: int = 200, body: Any = None, headers: Optional[Mapping[str, str]] = None, drop: bool = False) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.drop = drop


def arm_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


# Methods whose requests carry a body on Azure Resource Manager (an action's parameters, a
# resource): ARM takes JSON only, and some providers refuse anything else, an empty POST
# without a Content-Type too (Azure/azure-cli#10143, #28494; Azure/azure-rest-api-specs#9286).
BODY_METHODS = ("POST", "PUT", "PATCH")


def media_type_refusal(method: str, headers: Mapping[str, str], body: bytes) -> Optional[Reply]:
    """ARM's answer to a request whose body is not JSON, as providers give it: 415 with
    UnsupportedMediaType when the Content-Type is not application/json (or missing), 400
    with InvalidRequestContent when the body does not parse. None when it is acceptable."""
    if method not in BODY_METHODS and not body:
        return None
    content_type = next((value for name, value in headers.items() if name.lower() == "content-type"), None)
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return arm_error(415, "UnsupportedMediaType",
                         f"The content media type '{content_type or '<null>'}' is not supported. "
                         "Only 'application/json' is supported.")
    try:
        json.loads(body.decode("utf-8"))
    except ValueError:
        return arm_error(400, "InvalidRequestContent",
                         "The request content was invalid and could not be deserialized: not a JSON document.")
    return None


class Seen:
    """A request the fake received."""

    def __init__(self, method: str, path: str, query: Dict[str, str], headers: Dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"


Script = Union[List[Reply], Callable[[int], Reply]]
# A route's own check of a request: a refusal (ARM's answer), or None to go on.
Check = Callable[["Seen"], Optional[Reply]]


def arm_example(name: str) -> Any:
    """A file of ARM_EXAMPLES, parsed."""
    return json.loads((ARM_EXAMPLES / name).read_text(encoding="utf-8"))


def job_execution_template_problems(body: Any, job: Mapping[str, Any]) -> List[str]:
    """What is wrong with a Jobs_Start body for `job` (a job as ARM returns it): anything
    the JobExecutionTemplate schema does not allow, and containers that are not the job's
    (by name, in order)."""
    validator = jsonschema.Draft7Validator(arm_example("JobExecutionTemplate.schema.json"))
    problems = [f"{'/'.join(map(str, error.absolute_path)) or 'body'}: {error.message}"
                for error in validator.iter_errors(body)]
    if problems or not isinstance(body, dict):
        return problems
    template = (job.get("properties") or {}).get("template") or {}
    for kind in ("containers", "initContainers"):
        sent = [c.get("name") for c in body.get(kind) or []]
        known = [c.get("name") for c in template.get(kind) or []]
        if kind in body and sent != known:
            problems.append(f"{kind}: names {sent}, but the job's are {known}")
    if not body.get("containers"):
        problems.append("containers: none, so the execution would run the job's own image")
    return problems


class FakeAzure:
    """Routes (method, exact path) to scripted replies: a list is answered in turn (its
    last reply repeats), a function gets the route's request count (0 first)."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Tuple[Script, str, Optional[Check]]] = {}
        self.requests: List[Seen] = []
        self.unrouted: List[Seen] = []
        # Requests refused for their media type or body, before any route saw them.
        self.refused: List[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAzure":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def on(self, method: str, path: str, script: Script, token: str = ARM_TOKEN_PREFIX, check: Optional[Check] = None) -> None:
        """Answers METHOD PATH by the script; requests must carry a bearer token that
        starts with `token`, else they get a 401, and pass `check`, else they get its
        refusal (and count as refused)."""
        self.routes[(method, path)] = (script, token, check)

    def seen(self, method: Optional[str] = None, path: Optional[str] = None) -> List[Seen]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        seen = Seen(handler.command, split.path, query, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(seen)
            route = self.routes.get((seen.method, seen.path))
            count = sum(1 for r in self.requests if (r.method, r.path) == (seen.method, seen.path)) - 1
            if route is None:
                self.unrouted.append(seen)
        if route is None:
            reply = arm_error(404, "ResourceNotFound", f"the fake has no route for {seen.method} {seen.path}")
        else:
            script, token, check = route
            refusal = media_type_refusal(seen.method, seen.headers, seen.body)
            if refusal is None and check is not None:
                refusal = check(seen)
            if not seen.headers.get("Authorization", "").startswith(f"Bearer {token}"):
                reply = arm_error(401, "InvalidAuthenticationToken", "wrong or missing bearer token")
            elif refusal is not None:
                with self._lock:
                    self.refused.append(seen)
                reply = refusal
            else:
                reply = script(count) if callable(script) else script[min(count, len(script) - 1)]
        if reply.drop:
            handler.close_connection = True
            return
        if isinstance(reply.body, (bytes, str)):
            payload = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
            content_type = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(reply.body if reply.body is not None else {}).encode("utf-8")
            content_type = "application/json"
        handler.send_response(reply.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.server.fake.answer(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


FAKE_AZD = '''\
#!{python}
"""Fake azd: records its arguments; `auth token` prints a token as `azd auth token --output json` does."""
import json, os, sys
log = os.environ["FAKE_AZD_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_AZD_FAIL"):
    sys.stderr.write("ERROR: not logged in, run `azd auth login` to login\\n")
    sys.exit(1)
with open(log) as f:
    calls = sum(1 for _ in f)
print(json.dumps({{"token": "{prefix}%d" % calls, "expiresOn": os.environ.get("FAKE_AZD_EXPIRES", "2099-01-01T00:00:00Z")}}))
'''

FAKE_AZ = '''\
#!{python}
"""Fake Azure CLI: records that it was run, and fails. The hooks must never run it."""
import json, os, sys
with open(os.environ["FAKE_AZ_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1)
'''


class Tools:
    """A folder with the fake azd and az, put first on PATH, and their call logs."""

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        self.azd_log = folder / "azd-calls.jsonl"
        self.az_log = folder / "az-calls.jsonl"
        for name, text in (("azd", FAKE_AZD), ("az", FAKE_AZ)):
            path = self.bin / name
            path.write_text(text.format(python=sys.executable, prefix=ARM_TOKEN_PREFIX))
            path.chmod(0o755)

    def azd_calls(self) -> List[List[str]]:
        if not self.azd_log.exists():
            return []
        return [json.loads(line) for line in self.azd_log.read_text().splitlines()]

    def az_was_run(self) -> bool:
        return self.az_log.exists()


def run_hook(script: str, fake: FakeAzure, tools: Tools, env: Mapping[str, Optional[str]], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Runs infra/hooks/<script> as azd does: `python3 <absolute script path>` in the
    script's folder, with the azd environment's values in the process environment.
    A None value in env removes that variable."""
    full: Dict[str, str] = {
        "PATH": f"{tools.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(tools.bin.parent)),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AZURE_RESOURCE_MANAGER_URL": fake.url,
        "FAKE_AZD_LOG": str(tools.azd_log),
        "FAKE_AZ_LOG": str(tools.az_log),
        # Look-ups and back-offs in milliseconds, not seconds.
        "POLL_INTERVAL": "0.01",
        "RETRY_DELAY": "0.01",
    }
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    # As azd on Linux and macOS: `python3` from PATH (pkg/tools/python, ResolveCommand).
    python = shutil.which("python3", path=full["PATH"]) or sys.executable
    return subprocess.run(
        [python, str(HOOKS / script)],
        cwd=str(cwd or HOOKS),
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
