"""Issue 16, run for real: a daprd started with the Dapr settings infra/app/*.bicep gives a
revision is healthy (`/v1.0/healthz` answers 204, Dapr's "healthy") once the image the
revision runs listens, and
a revision without Dapr has no sidecar to wait at all; conversely a daprd whose app port
nothing listens on answers 500 and stays there, which is what Container Apps restarted
until the revision failed (daprdContainerCrashing) while the placeholder ran with the
app's own port.

The Bicep is evaluated as in test_app_modules.py (infra_support.app_revision); a small
HTTP listener on a free port stands for the image (the placeholder on its port 80, or the
app on its own port), and the revision's ports are mapped to local ones: the port that
image listens on to the listener, any other to a free port where nothing listens. daprd
is the one named by DAPRD (scripts/lib.sh: daprd_path); without it these tests are
skipped, and only then."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra_support import ROOT, app_modules, app_revision

DAPRD = os.environ.get("DAPRD", "")
needs_daprd = pytest.mark.skipif(
    not DAPRD,
    reason="DAPRD is not set: these tests run the daprd it names (scripts/lib.sh daprd_path finds or builds one)",
)

# How long a sidecar may take to answer at all, and to become healthy: daprd 1.16 with no
# components starts in well under a second; the rest is room for a busy 2-core machine.
STARTUP_SECONDS = 20
# How long a sidecar whose app port nothing listens on is watched staying unhealthy, once
# it answers (Container Apps gives a sidecar a few probe periods before it restarts it).
HOLD_SECONDS = 5
POLL_SECONDS = 0.1

SERVICES = sorted(app_modules(ROOT))
# (branch, image parameter, exists, image running now): the placeholder revision of a first
# provision, and the revision `azd deploy` makes with the app's own image.
BRANCHES = {
    "placeholder": ("", False, None),
    "app-image": ("crexample.azurecr.io/app:azd-1", True, "PLACEHOLDER"),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Answer(BaseHTTPRequestHandler):
    """200 to everything, with JSON the sidecar can read if it asks the app for its
    configuration (GET /dapr/config) or subscriptions."""

    def _answer(self):
        body = b"[]" if self.path.startswith("/dapr/subscribe") else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_OPTIONS = do_HEAD = _answer

    def log_message(self, *args):
        pass


class Listener:
    """An HTTP server on a free local port: the image a revision runs."""

    def __enter__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Sidecar:
    """daprd with a revision's Dapr settings, its ports local and free, no components, and
    name resolution by a SQLite file of its own (no mDNS on the network)."""

    def __init__(self, workdir, dapr, app_port):
        self.workdir = workdir
        self.http_port = free_port()
        (workdir / "resources").mkdir()
        config = workdir / "config.yaml"
        config.write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: sidecar-test\n"
            "spec:\n  nameResolution:\n    component: sqlite\n    version: v1\n    configuration:\n"
            "      connectionString: \"names.db\"\n  metric:\n    enabled: false\n"
        )
        self.args = [
            DAPRD, "--app-id", dapr["app_id"],
            "--dapr-http-port", str(self.http_port), "--dapr-grpc-port", str(free_port()),
            "--dapr-internal-grpc-port", str(free_port()), "--metrics-port", str(free_port()),
            "--dapr-listen-addresses", "127.0.0.1",
            "--resources-path", str(workdir / "resources"), "--config", str(config),
        ]
        if app_port is not None:
            self.args += ["--app-port", str(app_port), "--app-protocol", dapr["app_protocol"]]
        health = dapr["app_health"]
        if health is not None:
            self.args += [
                "--enable-app-health-check", "--app-health-check-path", health["path"],
                "--app-health-probe-interval", str(health["interval_seconds"]),
                "--app-health-probe-timeout", str(health["timeout_ms"]),
                "--app-health-threshold", str(health["threshold"]),
            ]
        self.log = workdir / "daprd.log"

    def __enter__(self):
        assert os.access(DAPRD, os.X_OK), f"DAPRD={DAPRD} is not an executable"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self):
        return self.log.read_text(errors="replace")

    def healthz(self):
        """The status of GET /v1.0/healthz, or None while nothing answers."""
        url = f"http://127.0.0.1:{self.http_port}/v1.0/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):
            return None

    def statuses_until(self, deadline, stop):
        """Polls healthz every POLL_SECONDS until `stop(status)` or the deadline; returns the
        statuses seen. Fails at once if daprd exits."""
        seen = []
        while True:
            status = self.healthz()
            seen.append(status)
            if stop(status) or time.monotonic() >= deadline:
                return seen
            try:
                code = self.process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"daprd exited with {code}; its log:\n{self.log_text()}")


def healthy(status):
    """Dapr's healthz answers 204 when the sidecar is healthy (any 2xx is taken as such)."""
    return status is not None and 200 <= status < 300


def local_ports(revision, listener):
    """The revision's ports on this machine: the one its image listens on is the listener's,
    any other is a free port nothing listens on."""
    unused = free_port()
    return lambda port: listener.port if port == revision["listens_on"] else unused


@needs_daprd
@pytest.mark.parametrize("branch", sorted(BRANCHES))
@pytest.mark.parametrize("service", SERVICES)
def test_every_revision_has_a_healthy_sidecar_or_none(tmp_path, service, branch):
    revision = app_revision(ROOT, service, *BRANCHES[branch])
    assert revision["placeholder"] == (branch == "placeholder"), revision
    with Listener() as listener:
        if revision["dapr"] is None:
            # Dapr off: Container Apps starts no sidecar, so nothing waits on any port and
            # nothing can be restarted. Only the placeholder may run like that.
            assert revision["placeholder"], f"{service} runs its own image without Dapr"
            return
        dapr = revision["dapr"]
        to_local = local_ports(revision, listener)
        app_port = to_local(dapr["app_port"]) if dapr["app_port"] is not None else None
        with Sidecar(tmp_path, dapr, app_port) as sidecar:
            seen = sidecar.statuses_until(time.monotonic() + STARTUP_SECONDS, healthy)
            assert healthy(seen[-1]), (
                f"{service} ({branch}): healthz never 2xx in {STARTUP_SECONDS} s "
                f"(saw {sorted(set(seen), key=str)}); daprd log:\n{sidecar.log_text()}"
            )


@needs_daprd
@pytest.mark.parametrize("service", SERVICES)
def test_a_sidecar_whose_app_port_nothing_listens_on_stays_unhealthy(tmp_path, service):
    # What the placeholder revision once had: the app's Dapr settings (its own
    # appPort) while the placeholder listens on port 80.
    dapr = app_revision(ROOT, service, *BRANCHES["app-image"])["dapr"]
    placeholder = app_revision(ROOT, service, *BRANCHES["placeholder"])
    assert dapr is not None and dapr["app_port"] != placeholder["listens_on"]
    with Listener() as listener:
        app_port = local_ports(placeholder, listener)(dapr["app_port"])
        with Sidecar(tmp_path, dapr, app_port) as sidecar:
            seen = sidecar.statuses_until(time.monotonic() + STARTUP_SECONDS, lambda status: status is not None)
            assert seen[-1] == 500, f"healthz answered {seen[-1]}, not 500; daprd log:\n{sidecar.log_text()}"
            held = sidecar.statuses_until(time.monotonic() + HOLD_SECONDS, lambda status: status != 500)
            assert set(held) == {500}, f"healthz left 500: {held}; daprd log:\n{sidecar.log_text()}"
            log = sidecar.log_text()
            assert f"waiting on port {app_port}" in log, log
            assert "application discovered on port" not in log, log


def test_the_listener_answers_like_an_app():
    with Listener() as listener:
        with urllib.request.urlopen(f"http://127.0.0.1:{listener.port}/dapr/config", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read()) == {}
