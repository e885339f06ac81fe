"""The GitHub workflows and Dependabot: actionlint and zizmor (offline) find nothing, and
each finds what is planted in a broken copy."""

from static_support import ROOT, replace_in, tool

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def test_actionlint_finds_nothing():
    result = tool("actionlint", *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    result = tool("zizmor", "--offline", "--no-progress", ROOT / ".github")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(copy_of):
    ci = copy_of(".github/workflows/ci.yml")
    replace_in(ci, "runs-on: ubuntu-24.04", "runs-on: [ubuntu-24.04")
    assert tool("actionlint", ci).returncode != 0


def test_zizmor_catches_an_unpinned_action_and_broad_permissions(copy_of):
    github = copy_of(".github")
    replace_in(github / "workflows/ci.yml", "actions/checkout@d23441a48e516b6c34aea4fa41551a30e30af803 # v6.1.0", "actions/checkout@v6")
    replace_in(github / "workflows/ci.yml", "permissions:\n  contents: read", "permissions: write-all")
    result = tool("zizmor", "--offline", "--no-progress", github)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout, result.stdout
    assert "excessive-permissions" in result.stdout, result.stdout


def test_every_action_is_pinned_by_commit():
    for workflow in WORKFLOWS:
        for line in workflow.read_text().splitlines():
            if "uses:" in line:
                ref = line.split("uses:", 1)[1].split("#")[0].strip()
                assert "@" in ref and len(ref.split("@")[1]) == 40, f"{workflow.name}: {line.strip()}"
