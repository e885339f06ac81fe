"""The GitHub workflows and Dependabot: actionlint and zizmor (offline) find nothing, and
each finds what is planted in a broken copy; the deploy workflow (azure-dev.yml) signs in
with azd only and gives azd time for cold remote builds."""

import os
import re
import subprocess
import tomllib

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


def workflow(name):
    return yaml.safe_load((ROOT / ".github/workflows" / name).read_text())


def gomod_version(tool_dir, module):
    for line in (ROOT / tool_dir / "go.mod").read_text().splitlines():
        if line.strip().startswith(module + " v"):
            return line.split()[1].lstrip("v")
    raise AssertionError(f"no {module} in {tool_dir}/go.mod")


def step_using(job, action):
    return next(step for step in job["steps"] if step.get("uses", "").startswith(action + "@"))


def runs(job):
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_runs_the_readme_default_path_from_the_go_modules():
    # No DAPRD and no installed Dapr: test.sh builds daprd from tools/daprd/go.mod and the
    # multi-app run check builds the Dapr CLI from tools/dapr-cli/go.mod, so a bump of
    # either compiles in CI; Go is the version tools/daprd/go.mod names.
    job = workflow("ci.yml")["jobs"]["default-path"]
    go = step_using(job, "actions/setup-go")["with"]
    assert go["go-version-file"] == "tools/daprd/go.mod", go
    assert "go-version" not in go
    commands = runs(job)
    assert "./scripts/test.sh" in commands and "./scripts/checks/dapr-multi-app-run.sh" in commands
    assert "DAPRD" not in commands and "DAPRD" not in str(job.get("env", {}))
    assert not any(step.get("uses", "").startswith("dapr/setup-dapr@") for step in job["steps"])
    assert "dapr init" not in commands
    # Go's module and build caches are keyed on the go.sum files; the daprd and Dapr CLI
    # builds themselves are never restored from a cache.
    caches = [step["with"] for step in job["steps"] if step.get("uses", "").startswith("actions/cache@")]
    go_cache = next(c for c in caches if "go-build" in c["path"])
    assert "tools/daprd/go.sum" in go_cache["key"] and "tools/dapr-cli/go.sum" in go_cache["key"]
    for cache in caches:
        for path in str(cache["path"]).split():
            assert path.rstrip("/") not in ("~/.cache/dapr-rust-aca", "~/.dapr") and "daprd" not in path \
                and "dapr-cli" not in path, path


def test_ci_reads_the_pinned_versions_from_the_go_modules():
    # The release-binaries matrix names the managed Dapr of Container Apps (an Azure fact,
    # 1.16.x, not a pin of ours) and `latest`; the pins themselves (tools/daprd/go.mod,
    # tools/dapr-cli/go.mod) are read from the go.mod files, never repeated in ci.yml.
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    job = workflow("ci.yml")["jobs"]["release-binaries"]
    versions = [str(v) for v in job["strategy"]["matrix"]["dapr"]]
    assert "latest" in versions, versions
    managed = [v for v in versions if v != "latest"]
    assert len(managed) == 1 and managed[0].startswith("1.16."), versions
    for version in {gomod_version("tools/daprd", "github.com/dapr/dapr"), gomod_version("tools/dapr-cli", "github.com/dapr/cli")}:
        code = "\n".join(line.split("#")[0] for line in text.splitlines())
        assert version not in code, f"ci.yml repeats {version} instead of reading it from go.mod"
    setup = step_using(job, "dapr/setup-dapr")["with"]
    assert setup["version"] == "${{ steps.pins.outputs.dapr-cli }}", setup
    pins = next(step for step in job["steps"] if step.get("id") == "pins")["run"]
    assert "scripts/lib.sh" in pins and "dapr_cli_version" in pins
    init = next(step for step in job["steps"] if "dapr init" in step.get("run", ""))
    assert init["env"]["RUNTIME"] == "${{ matrix.dapr }}"
    # What the pins step prints, run here: the go.mod versions.
    result = subprocess.run(["bash", "-c", pins], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, GITHUB_OUTPUT="/dev/stdout"))
    assert result.returncode == 0, result.stderr
    assert f"dapr-cli={gomod_version('tools/dapr-cli', 'github.com/dapr/cli')}" in result.stdout


def test_the_local_dapr_is_on_the_line_container_apps_runs():
    # Container Apps runs a managed Dapr 1.16 (microsoft/azure-container-apps#1676).
    assert gomod_version("tools/daprd", "github.com/dapr/dapr").rsplit(".", 1)[0] == "1.16"


def test_every_job_that_runs_the_test_command_has_the_whole_history():
    # gitleaks in the test command scans the history: a depth-1 checkout would hide it.
    found = 0
    for path in WORKFLOWS:
        for name, job in (yaml.safe_load(path.read_text())["jobs"] or {}).items():
            if "scripts/test.sh" in runs(job) or ".ci/run" in runs(job):
                found += 1
                checkout = step_using(job, "actions/checkout")
                assert checkout.get("with", {}).get("fetch-depth") == 0, f"{path.name}: {name}"
    assert found >= 2


def test_advisories_are_checked_on_a_schedule():
    scheduled = [
        (path.name, job) for path in WORKFLOWS
        for doc in [yaml.safe_load(path.read_text())]
        # PyYAML reads the key `on` as True.
        if "schedule" in (doc.get("on") or doc.get(True) or {})
        for job in doc["jobs"].values()
    ]
    assert any("cargo deny check advisories" in runs(job) for _, job in scheduled), scheduled
    for name, _ in scheduled:
        doc = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
        crons = [entry["cron"] for entry in (doc.get("on") or doc.get(True))["schedule"]]
        assert crons and all(len(cron.split()) == 5 for cron in crons), crons


def test_workflows_dependabot_and_issue_forms_match_their_schemas():
    for schema, files in [
        ("vendor.github-workflows", WORKFLOWS),
        ("vendor.dependabot", [ROOT / ".github/dependabot.yml"]),
        ("vendor.github-issue-forms", sorted((ROOT / ".github/ISSUE_TEMPLATE").glob("*.yml"))),
    ]:
        files = [f for f in files if f.name != "config.yml"]
        assert files, schema
        result = tool("check-jsonschema", "--builtin-schema", schema, *files)
        assert result.returncode == 0, result.stdout + result.stderr
    result = tool("check-jsonschema", "--builtin-schema", "vendor.github-issue-config", ROOT / ".github/ISSUE_TEMPLATE/config.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_dependabot_config_is_refused(copy_of):
    broken = copy_of(".github/dependabot.yml")
    replace_in(broken, "package-ecosystem: rust-toolchain", "package-ecosystem: rust-toolchains")
    assert tool("check-jsonschema", "--builtin-schema", "vendor.dependabot", broken).returncode != 0


# --- Dependabot covers every manifest ---------------------------------------------------------

def repository_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).exists()]


def manifests(files):
    """Every file some Dependabot ecosystem reads: (ecosystem, the folder it is in)."""
    found = []
    members = {m for m in tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]}
    for path in files:
        folder, name = "/" + os.path.dirname(path), os.path.basename(path)
        folder = folder.rstrip("/") or "/"
        if name in ("Cargo.toml", "Cargo.lock"):
            # A workspace member is updated through the workspace's root.
            found.append(("cargo", "/" if os.path.dirname(path) in members else folder, path))
        elif name == "go.mod":
            found.append(("gomod", folder, path))
        elif name == "package.json":
            found.append(("npm", folder, path))
        elif re.fullmatch(r"requirements.*\.txt", name):
            found.append(("pip", folder, path))
        elif name == "Dockerfile" or name.endswith(".Dockerfile"):
            found.append(("docker", folder, path))
        elif name == "devcontainer.json":
            found.append(("devcontainers", "/", path))
        elif path.startswith(".github/workflows/") and name.endswith((".yml", ".yaml")):
            found.append(("github-actions", "/", path))
        elif name in ("rust-toolchain.toml", "rust-toolchain"):
            found.append(("rust-toolchain", folder, path))
    return found


def covered(config):
    pairs = set()
    for update in config["updates"]:
        for folder in update.get("directories") or [update["directory"]]:
            pairs.add((update["package-ecosystem"], "/" + folder.strip("/") if folder.strip("/") else "/"))
    return pairs


def test_dependabot_covers_every_manifest_in_the_repository():
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    found = manifests(repository_files())
    kinds = {ecosystem for ecosystem, _, _ in found}
    # The repository has each of these: the listing itself is not missing any.
    assert {"cargo", "gomod", "npm", "pip", "docker", "devcontainers", "github-actions", "rust-toolchain"} <= kinds
    missing = [path for ecosystem, folder, path in found if (ecosystem, folder) not in covered(config)]
    assert not missing, f"no Dependabot entry covers {missing}"


def test_every_dependabot_entry_points_at_a_manifest_of_its_ecosystem():
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    found = {(ecosystem, folder) for ecosystem, folder, _ in manifests(repository_files())}
    stale = sorted(pair for pair in covered(config) if pair not in found)
    assert not stale, f"Dependabot entries with no manifest there: {stale}"


def test_the_coverage_check_finds_a_manifest_dependabot_misses(tmp_path):
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    found = manifests(repository_files() + ["tools/new-tool/package.json", "tools/other/go.mod"])
    missing = {path for ecosystem, folder, path in found if (ecosystem, folder) not in covered(config)}
    assert missing == {"tools/new-tool/package.json", "tools/other/go.mod"}


def test_the_rust_toolchain_and_both_rust_images_move_in_one_pull_request():
    # scripts/checks/docker-context.sh fails when a Dockerfile's Rust image and
    # rust-toolchain.toml differ: separate pull requests for them would each fail.
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    groups = {}
    for update in config["updates"]:
        for folder in update.get("directories") or [update["directory"]]:
            groups[(update["package-ecosystem"], folder)] = update.get("multi-ecosystem-group")
    dockerfiles = [p for e, _, p in manifests(repository_files()) if e == "docker"]
    assert len(dockerfiles) == 2
    names = {groups[("rust-toolchain", "/")]} | {groups[("docker", "/" + os.path.dirname(p))] for p in dockerfiles}
    assert len(names) == 1 and None not in names, names
    assert names <= set(config["multi-ecosystem-groups"])
