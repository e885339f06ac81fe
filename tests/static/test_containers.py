"""The Dockerfiles (hadolint at warning level, and the build context check of
scripts/checks/docker-context.sh) and azure.yaml (scripts/checks/azure-yaml.sh: azd's
schema, our rules, the paths it names, and infra/main.parameters.json against ARM's
parameters schema). Each is also shown to fail on a broken copy."""

import os
import subprocess
import sys
from pathlib import Path

from static_support import ROOT, replace_in, tool

DOCKERFILES = [ROOT / "src/batch/Dockerfile", ROOT / "src/order-processor/Dockerfile"]


def hadolint(*files):
    return tool("hadolint", "--failure-threshold", "warning", *files)


def test_hadolint_finds_nothing_at_warning_level():
    result = hadolint(*DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_broken_copy(copy_of):
    broken = copy_of("src/batch/Dockerfile")
    # The Rust image's line as it is now (Dependabot moves its version), made unpinned.
    builder = next(line for line in broken.read_text().splitlines() if line.startswith("FROM rust:"))
    replace_in(broken, builder, "FROM rust:latest AS builder")
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3007" in result.stdout, result.stdout


def test_the_build_context_holds_what_the_build_needs():
    result = subprocess.run(["bash", "scripts/checks/docker-context.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def azure_yaml_check(path=None):
    env = dict(os.environ, CHECKERS_VENV=str(Path(sys.executable).parent.parent))
    command = ["bash", "scripts/checks/azure-yaml.sh"] + ([str(path)] if path else [])
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def test_azure_yaml_and_the_parameters_file_are_valid():
    result = azure_yaml_check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_azure_yaml_is_refused(copy_of):
    broken = copy_of("azure.yaml")
    replace_in(broken, "\n    host: containerapp\n", "\n    host: containerap\n")
    assert azure_yaml_check(broken).returncode != 0
