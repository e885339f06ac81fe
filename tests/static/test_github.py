"""The GitHub workflows and Dependabot: actionlint and zizmor (offline) find nothing, and
each finds what is planted in a broken copy; the deploy workflow (azure-dev.yml) signs in
with azd only and gives azd time for cold remote builds."""

import yaml

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


def azure_dev_job():
    workflow = yaml.safe_load((ROOT / ".github/workflows/azure-dev.yml").read_text())
    return workflow["jobs"]["deploy"]


def test_azure_dev_signs_in_with_azd_only():
    # The hooks (infra/hooks/*.py) take their token from azd, which renews its GitHub
    # federated credential by itself; an `az login` with GitHub's assertion expires in minutes.
    runs = "\n".join(step.get("run", "") for step in azure_dev_job()["steps"])
    assert "azd auth login" in runs and "--federated-credential-provider github" in runs
    for line in runs.splitlines():
        assert not line.strip().startswith("az "), f"the workflow runs the Azure CLI: {line.strip()}"
    assert "containerapp" not in runs and "ACTIONS_ID_TOKEN_REQUEST" not in runs
    assert "python3" in runs, "the hooks need Python 3 (ubuntu-24.04 has it)"


def test_azure_dev_leaves_time_for_cold_remote_builds():
    job = azure_dev_job()
    # azd's per-service publish/deploy limit bounds a cold remote Rust build plus the bootstrap.
    assert int(job["env"]["AZD_DEPLOY_TIMEOUT"]) >= 2700
    assert job["timeout-minutes"] >= 90


def ci_dapr_versions():
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    return workflow["jobs"]["test"]["strategy"]["matrix"]["dapr"]


def test_ci_tests_the_dapr_line_container_apps_runs_and_the_newest():
    # Container Apps runs a managed Dapr 1.16 (microsoft/azure-container-apps#1676); the
    # local default (tools/daprd/go.mod) is on the same line.
    gomod = (ROOT / "tools/daprd/go.mod").read_text()
    local = next(
        line.split()[1].lstrip("v") for line in gomod.splitlines()
        if line.strip().startswith("github.com/dapr/dapr v")
    )
    versions = ci_dapr_versions()
    assert "latest" in versions, versions
    lines = {v.rsplit(".", 1)[0] for v in versions if v != "latest"}
    assert lines == {"1.16"}, versions
    assert local.rsplit(".", 1)[0] == "1.16", local
