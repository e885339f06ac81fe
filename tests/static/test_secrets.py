"""No secret in the repository's history (gitleaks, built from Go modules by the test
command), and gitleaks does find one that is planted in a scratch repository."""

import os
import secrets
import subprocess

import pytest

from static_support import ROOT


def gitleaks(repo):
    """gitleaks over the history of `repo`, with this project's rules (.gitleaks.toml)."""
    binary = os.environ.get("GITLEAKS")
    if not binary:
        pytest.fail("GITLEAKS is not set: run the tests with scripts/test.sh")
    command = [binary, "git", "--no-banner", "--redact", "--config", str(ROOT / ".gitleaks.toml"), str(repo)]
    return subprocess.run(command, capture_output=True, text=True)


def test_the_history_holds_no_secret():
    result = gitleaks(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_committed_connection_string_with_a_password_is_found(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    # Made at run time, so that no such literal sits in this repository's own history.
    password = secrets.token_urlsafe(12)
    (tmp_path / ".env").write_text(f"DATABASE_URL=postgres://admin:{password}@db.example.com:5432/prod\n")
    git("add", "-A")
    git("-c", "user.email=test@example.invalid", "-c", "user.name=test", "commit", "-qm", "oops")
    result = gitleaks(tmp_path)
    assert result.returncode != 0
    assert "leaks found: 1" in result.stdout + result.stderr
