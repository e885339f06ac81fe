"""Repository conventions: every script and hook is checked out with LF line endings
(.gitattributes), whatever the platform of the clone; the community files the azd gallery
asks for are there and point where they should."""

import os
import shutil
import subprocess

import yaml

from static_support import ROOT


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True).stdout


def scripts_and_hooks(root=ROOT):
    """Files run by a shell or an interpreter: *.sh, *.py, and anything with a #! line."""
    files = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=root).splitlines()
    found = []
    for path in files:
        full = os.path.join(root, path)
        if not os.path.isfile(full):
            continue
        with open(full, "rb") as handle:
            shebang = handle.read(2) == b"#!"
        if path.endswith((".sh", ".py")) or shebang:
            found.append(path)
    return found


def not_lf(paths, root=ROOT):
    """The files among PATHS that git would not check out with LF endings on every platform."""
    out = git("check-attr", "text", "eol", "--", *paths, cwd=root)
    attrs = {}
    for line in out.splitlines():
        path, name, value = line.rsplit(": ", 2)
        attrs.setdefault(path, {})[name] = value
    return [p for p in paths if attrs[p]["eol"] != "lf" or attrs[p]["text"] not in ("set", "auto")]


def test_every_script_and_hook_is_checked_out_with_lf():
    files = scripts_and_hooks()
    # The listing finds what matters: the entry scripts, CI's, the azd hooks.
    for expected in ("scripts/run.sh", "scripts/test.sh", "scripts/lib.sh", ".ci/run",
                     ".devcontainer/post-create.sh", "infra/hooks/bootstrap.py"):
        assert expected in files
    assert not_lf(files) == []


def test_the_check_finds_scripts_without_lf_attributes(tmp_path):
    # A copy of the repository's scripts without .gitattributes: every one is reported.
    repo = tmp_path / "repo"
    for path in ("scripts/run.sh", ".ci/run", "infra/hooks/bootstrap.py"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, repo / path)
    git("init", "-q", cwd=repo)
    assert sorted(not_lf(scripts_and_hooks(repo), repo)) == [".ci/run", "infra/hooks/bootstrap.py", "scripts/run.sh"]


def test_the_byte_exact_test_corpora_are_never_converted():
    out = git("check-attr", "text", "--", "tests/data/bad-orders/non-utf8.json", "tests/data/bad-requests/non-utf8.json")
    assert out.count("text: unset") == 2, out


def test_contributing_says_how_to_run_and_where_security_reports_go():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for needed in ("./scripts/run.sh", "./scripts/test.sh", "(SECURITY.md)", "(CODE_OF_CONDUCT.md)", "dev container"):
        assert needed in text, needed


def test_code_of_conduct_and_security_policy_exist():
    assert "Contributor Covenant" in (ROOT / "CODE_OF_CONDUCT.md").read_text()
    assert "Reporting a vulnerability" in (ROOT / "SECURITY.md").read_text()


def test_issues_come_through_forms_that_send_security_reports_elsewhere():
    folder = ROOT / ".github/ISSUE_TEMPLATE"
    config = yaml.safe_load((folder / "config.yml").read_text())
    assert config["blank_issues_enabled"] is False
    forms = sorted(p for p in folder.glob("*.yml") if p.name != "config.yml")
    assert len(forms) >= 2
    assert "SECURITY.md" in (folder / "bug_report.yml").read_text()
