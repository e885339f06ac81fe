"""Helpers for the offline checks of the repository's own configuration files."""

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASH = shutil.which("bash")


def tool(name, *args, cwd=ROOT):
    """Runs a checker installed beside this Python (the test command's venv); actionlint is
    the official binary built from its Go module (ACTIONLINT, which scripts/test.sh sets,
    or scripts/lib.sh's actionlint_path)."""
    binary = actionlint_binary() if name == "actionlint" else str(BIN / name)
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@functools.cache
def actionlint_binary():
    if os.environ.get("ACTIONLINT"):
        return os.environ["ACTIONLINT"]
    result = lib_sh("actionlint_path")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# What scripts/lib.sh and the scripts read from the environment: left out, so that a
# test's outcome does not depend on the shell it was started from.
SCRIPT_ENV = ("DAPRD", "DAPR_CLI", "PG_BINDIR", "DATABASE_URL", "TEST_DATABASE_URL", "STATE_DIR",
              "DAPR_RUST_ACA_ANY_OS", "PG_PORT")


def script_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV and not k.endswith(("_PORT", "_HTTP", "_GRPC", "_METRICS"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def lib_sh(code, *args, env=None, timeout=300):
    """Runs bash CODE after sourcing scripts/lib.sh (ARGS are $1...)."""
    command = [BASH, "-c", f'source "{ROOT}/scripts/lib.sh"\n{code}', "bash", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env or script_env(), timeout=timeout)


class FakeBin:
    """A folder of stand-in commands to put first on PATH. Each records its calls (one line
    each: its name and arguments) in calls.log, then runs its shell body."""

    def __init__(self, folder):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "calls.log"

    def add(self, name, body="exit 1"):
        path = self.folder / name
        record = f'printf "%s\\n" "$(printf "%s " {name} "$@" | tr "\\n" " ")" >> "{self.log}"'
        path.write_text(f"#!/bin/sh\n{record}\n{body}\n")
        path.chmod(0o755)
        return path

    def link(self, name):
        """Puts the real command NAME in the folder (for a PATH of this folder only)."""
        (self.folder / name).symlink_to(shutil.which(name))

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def path(self, rest=True):
        return f"{self.folder}:{os.environ['PATH']}" if rest else str(self.folder)


def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
