"""What the azd hooks in this folder (bootstrap.py, postdeploy.py) share: their settings
from the environment, their output, azd's access token, and requests to Azure with retries.

Standard library only, Python 3.8 or newer: azd runs these hooks with the system Python
(no requirements.txt or pyproject.toml lies between this folder and the project root), the
same way on Windows, macOS and Linux. The Azure CLI is not used: the token comes from azd's
own sign-in through `azd auth token` (the command the Azure SDKs' AzureDeveloperCliCredential
runs), so a hook works wherever azd is signed in, in GitHub Actions too, where azd renews its
federated credential by itself.
"""

from __future__ import annotations

import datetime
import http.client
import json
import math
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

# Where Azure Resource Manager is; tests point this at a fake server.
ARM_URL_VARIABLE = "AZURE_RESOURCE_MANAGER_URL"
PUBLIC_ARM_URL = "https://management.azure.com"
# The scope azd itself signs in for (Azure/azure-dev cli/azd/pkg/auth/manager.go, LoginScopes).
ARM_SCOPE = "https://management.azure.com//.default"
# Microsoft.App's API version for every call, the one infra/ deploys the apps and the job with.
APP_API_VERSION = "2026-01-01"

# Methods that always send a body (JSON, `{}` when there is nothing to say).
BODY_METHODS = ("POST", "PUT", "PATCH")
# Answers worth another try: throttling, timeouts and server-side errors.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# A token is renewed when it expires within this many seconds.
RENEW_BEFORE_SECONDS = 300.0
AZD_TIMEOUT_SECONDS = 120.0


class HookFailure(Exception):
    """Something the hook cannot get past: what is wrong, and where to look further."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ApiError(HookFailure):
    """An answer from Azure that another try will not change (a 4xx, or retries spent)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status = status


class Output:
    """Short progress lines on stdout and failures on stderr, each prefixed with the
    hook's name and flushed at once, so that azd shows them as they come."""

    def __init__(self, name: str) -> None:
        self.name = name

    def say(self, text: str) -> None:
        print(f"{self.name}: {text}", flush=True)

    def failed(self, failure: HookFailure) -> None:
        print(f"{self.name}: FAILED: {failure.message}", file=sys.stderr, flush=True)
        if failure.hint:
            print(failure.hint, file=sys.stderr, flush=True)


def run(name: str, body: Callable[[Output], None]) -> int:
    """Runs a hook's body and turns its outcome into an exit code for azd."""
    for stream in (sys.stdout, sys.stderr):
        # A Windows console may not encode every character of Azure's messages.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    out = Output(name)
    try:
        body(out)
    except HookFailure as failure:
        out.failed(failure)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


def require(names: Sequence[str], why: str) -> Dict[str, str]:
    """The values of environment variables that must be set; names every missing one."""
    missing = [name for name in names if not os.environ.get(name, "").strip()]
    if missing:
        raise HookFailure(f"not set: {', '.join(missing)}. {why}")
    return {name: os.environ[name].strip() for name in names}


def seconds(name: str, default: float) -> float:
    """A duration in seconds from an environment variable, or the default when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise HookFailure(f"{name}={raw!r} is not a number of seconds above 0")
    return value


class Deadline:
    """A point in time some number of seconds from now."""

    def __init__(self, seconds_from_now: float) -> None:
        self.seconds = seconds_from_now
        self._end = time.monotonic() + seconds_from_now

    def passed(self) -> bool:
        return time.monotonic() >= self._end


def parse_rfc3339(text: str) -> Optional[float]:
    """Seconds since the epoch of an RFC 3339 time ("2026-05-01T12:00:00Z", with an
    offset or fractional seconds too), or None when it is not one."""
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?",
        text.strip(),
    )
    if match is None:
        return None
    date, clock, fraction, offset = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if offset in (None, "Z", "z") else offset
    try:
        moment = datetime.datetime.fromisoformat(f"{date}T{clock}.{micro}{zone}")
    except ValueError:
        return None
    return moment.timestamp()


def parse_azd_token(stdout: str) -> Tuple[str, Optional[float]]:
    """The token and its expiry from `azd auth token --output json`, which prints
    {"token": "...", "expiresOn": "<RFC 3339>"} (Azure/azure-dev cli/azd/pkg/contracts/auth_token.go)."""
    candidates = [stdout] + list(reversed(stdout.splitlines()))
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("token"), str) and data["token"]:
            expires = data.get("expiresOn")
            return data["token"], parse_rfc3339(expires) if isinstance(expires, str) else None
    raise HookFailure("'azd auth token' printed no JSON with a token; is azd up to date?")


class AzdToken:
    """An access token for Azure Resource Manager from azd's own sign-in, asked for
    with `azd auth token --output json --scope <ARM> [--tenant-id <tenant>]` and
    renewed when it is about to expire."""

    def __init__(self, tenant_id: Optional[str], scope: str = ARM_SCOPE) -> None:
        self.tenant_id = tenant_id or None
        self.scope = scope
        self._token: Optional[str] = None
        self._expires = 0.0

    def get(self) -> str:
        if self._token is None or time.time() >= self._expires - RENEW_BEFORE_SECONDS:
            self._token, expires = self._ask_azd()
            # Without a readable expiry, use it for a few minutes and then ask again.
            self._expires = expires if expires is not None else time.time() + RENEW_BEFORE_SECONDS + 180
        return self._token

    def renew(self) -> str:
        self._token = None
        return self.get()

    def argv(self, azd: str) -> List[str]:
        argv = [azd, "auth", "token", "--output", "json", "--scope", self.scope]
        if self.tenant_id:
            argv += ["--tenant-id", self.tenant_id]
        return argv

    def _ask_azd(self) -> Tuple[str, Optional[float]]:
        azd = shutil.which("azd")
        if azd is None:
            raise HookFailure("azd is not on PATH: these hooks sign in with azd's own login (https://aka.ms/azd-install)")
        sign_in = "Sign in with 'azd auth login' (with --tenant-id if your subscription is in another tenant) and run it again."
        try:
            done = subprocess.run(
                self.argv(azd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=AZD_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise HookFailure(f"'azd auth token' did not answer within {AZD_TIMEOUT_SECONDS:g} s", sign_in) from error
        except OSError as error:
            raise HookFailure(f"cannot run {azd}: {error}") from error
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip() or done.stdout.decode("utf-8", "replace").strip()
            detail = " ".join(said.splitlines()[-3:]) or "no message"
            raise HookFailure(f"'azd auth token' failed (exit code {done.returncode}): {detail}", sign_in)
        return parse_azd_token(done.stdout.decode("utf-8", "replace"))


class Response:
    """A complete HTTP answer."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as error:
            raise HookFailure(f"Azure answered {self.status} with a body that is not JSON: {self.body[:200]!r}") from error

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Transient(Exception):
    """A failure of the connection itself (refused, reset, timed out)."""


def error_message(body: bytes) -> str:
    """ARM's error message from an error answer ({"error": {"code", "message"}}, or
    the same fields at the top level), else the start of the body."""
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500] or "no message"
    if isinstance(data, dict):
        error = data.get("error") if isinstance(data.get("error"), dict) else data
        code, message = error.get("code"), error.get("message")
        if code or message:
            return ": ".join(str(part) for part in (code, message) if part)
    return json.dumps(data)[:500]


class Azure:
    """Requests to Azure Resource Manager with azd's token, and to the other Azure
    endpoints a hook needs (the Container Apps log stream), with retries: throttling
    (429), server errors and dropped connections are tried again with back-off; any
    other error answer stops the hook with Azure's own message."""

    def __init__(
        self,
        token: AzdToken,
        base_url: Optional[str] = None,
        retry_delay: Optional[float] = None,
        attempts: int = 6,
        timeout: float = 60.0,
    ) -> None:
        self.token = token
        self.base_url = (base_url or os.environ.get(ARM_URL_VARIABLE, "").strip() or PUBLIC_ARM_URL).rstrip("/")
        # First back-off in seconds (doubling up to 30); RETRY_DELAY makes it tiny in tests.
        self.retry_delay = retry_delay if retry_delay is not None else seconds("RETRY_DELAY", 2.0)
        self.attempts = attempts
        self.timeout = timeout

    def arm(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        *,
        api_version: str = APP_API_VERSION,
        allow_not_found: bool = False,
    ) -> Optional[Any]:
        """An ARM call on a resource path ("/subscriptions/..."): its JSON answer, or
        None for a 404 when allow_not_found."""
        separator = "&" if "?" in path else "?"
        url = f"{self.base_url}{path}{separator}api-version={api_version}"
        response = self.send(method, url, self.token.get, renew=self.token.renew, body=body, allow_not_found=allow_not_found)
        return None if response is None else response.json()

    def send(
        self,
        method: str,
        url: str,
        bearer: Callable[[], str],
        *,
        renew: Optional[Callable[[], str]] = None,
        body: Optional[Any] = None,
        allow_not_found: bool = False,
    ) -> Optional[Response]:
        """Any call with a bearer token, retried while the failure may pass."""
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, data = self._once(method, url, bearer(), body)
            except _Transient as error:
                status, headers, data, problem = 0, {}, b"", str(error)
            else:
                if status < 400:
                    return Response(status, headers, data)
                if status == 404 and allow_not_found:
                    return None
                problem = f"{status} {error_message(data)}"
                if status == 401 and renew is not None and not renewed:
                    # The token may have expired meanwhile: one more try with a new one.
                    renew()
                    renewed = True
                    attempt -= 1
                    continue
                if status not in TRANSIENT_STATUSES:
                    raise ApiError(status, f"{where} answered {problem}")
            if attempt >= self.attempts:
                raise ApiError(status, f"{where} still failing after {attempt} tries: {problem}")
            time.sleep(self._delay(attempt, headers))

    def _delay(self, attempt: int, headers: Mapping[str, str]) -> float:
        delay = min(self.retry_delay * 2 ** (attempt - 1), 30.0)
        retry_after = (headers.get("Retry-After") or "").strip()
        if retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        return delay

    def _once(self, method: str, url: str, token: str, body: Optional[Any]) -> Tuple[int, Mapping[str, str], bytes]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": "dapr-rust-aca-azd-hooks",
        }
        data: Optional[bytes] = None
        if body is not None or method in BODY_METHODS:
            # ARM takes JSON only: a body always goes as application/json, and an action
            # without parameters (.../start, .../getAuthToken) sends an empty object, never
            # an empty body, which urllib would label a form and providers refuse (415).
            data = json.dumps({} if body is None else body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            try:
                payload = error.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            return error.code, error.headers or {}, payload
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLCertVerificationError):
                raise HookFailure(
                    f"cannot verify the TLS certificate of {urllib.parse.urlsplit(url).netloc}: {error.reason}",
                    "On macOS with Python from python.org, run its 'Install Certificates.command' once.",
                ) from error
            raise _Transient(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {error.reason}") from error
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"connection to {urllib.parse.urlsplit(url).netloc} failed: {error!r}") from error
