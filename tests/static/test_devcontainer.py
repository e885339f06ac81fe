"""The dev container: valid against the dev container schema (vendored in
tests/schemas/devcontainer), its post-create script clean under shellcheck, its Node.js new
enough for the npm packages tools/ pins and its Dapr CLI the version tools/dapr-cli pins."""

import json5
import pytest

from static_support import ROOT, lib_sh, replace_in, tool

NODE_FEATURE = "ghcr.io/devcontainers/features/node:1"
DAPR_CLI_FEATURE = "ghcr.io/dapr/cli/dapr-cli:0"

SCHEMA = ROOT / "tests/schemas/devcontainer/devContainer.offline.schema.json"


def check(path):
    return tool("check-jsonschema", "--force-filetype", "json5", "--schemafile", SCHEMA, path)


def test_devcontainer_json_is_valid():
    result = check(ROOT / ".devcontainer/devcontainer.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_devcontainer_json_is_refused(copy_of):
    broken = copy_of(".devcontainer/devcontainer.json")
    replace_in(broken, '"forwardPorts": [6001', '"forwardPorts": "6001", "x": [6001')
    assert check(broken).returncode != 0


def test_post_create_script_is_clean():
    result = tool("shellcheck", "-x", ".devcontainer/post-create.sh")
    assert result.returncode == 0, result.stdout


def features():
    return json5.loads((ROOT / ".devcontainer/devcontainer.json").read_text())["features"]


def node_version_satisfies(version, lock):
    """Whether Node.js VERSION (the lowest release of it, for "24" 24.0.0) meets the
    `engines` of every package in LOCK, read by scripts/lib.sh as the scripts read them."""
    parts = (str(version).split(".") + ["0", "0"])[:3]
    result = lib_sh('node_unmet_engines "$1" "$2"', ROOT / lock, ".".join(parts))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("lock", ["tools/markdownlint/package-lock.json", "tools/postgres/package-lock.json"])
def test_the_dev_container_s_node_runs_the_npm_packages_tools_pin(lock):
    # Without a Node feature, test.sh installs Debian's Node.js 18, which markdownlint-cli2
    # refuses. A Dependabot update of either side fails here until they agree again.
    version = features()[NODE_FEATURE]["version"]
    assert str(version)[0].isdigit(), f"pin the Node.js major version, not {version!r}"
    unmet = node_version_satisfies(version, lock)
    assert not unmet, f"Node.js {version} of devcontainer.json does not satisfy: {unmet}"


def test_the_node_check_fails_for_debian_s_node():
    assert "markdownlint-cli2" in node_version_satisfies("18.19.0", "tools/markdownlint/package-lock.json")


def test_the_dev_container_s_dapr_cli_is_the_version_tools_dapr_cli_pins():
    # dapr-run.sh wants that version: any other would have it build the CLI from Go modules.
    pinned = next(line.split()[1].lstrip("v") for line in (ROOT / "tools/dapr-cli/go.mod").read_text().splitlines()
                  if line.strip().startswith("github.com/dapr/cli v"))
    assert features()[DAPR_CLI_FEATURE].get("version") == pinned

