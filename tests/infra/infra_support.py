"""Shared helpers for the offline checks of infra/, azure.yaml and components/."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]


def parse_bicep(path):
    """The pycep JSON form of a Bicep file."""
    return BicepParser().parse(file_path=Path(path))


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **kwargs)


def arm_check(infra_dir):
    """Runs the vendored bicep-arm-check on a directory; returns the completed process."""
    return run([
        sys.executable, str(ROOT / "tools/bicep-arm-check/bicep_arm_check.py"),
        "--schemas", str(ROOT / "tests/schemas/arm"), str(infra_dir),
    ])


def checkov(infra_dir):
    """Runs checkov with this project's policies and config on a directory."""
    binary = os.environ.get("CHECKOV_BIN")
    if not binary:
        pytest.fail("CHECKOV_BIN is not set: run the tests with scripts/test.sh")
    env = dict(os.environ, CKV_PARSE_ERROR_FAIL="true", BC_SKIP_MAPPING="TRUE")
    return run([
        binary, "--config-file", str(ROOT / "tests/infra/checkov.yaml"),
        "--external-checks-dir", str(ROOT / "tests/infra/checkov"),
        "-d", str(infra_dir),
    ], env=env)




def replace_in(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
