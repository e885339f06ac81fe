"""The dev container: valid against the dev container schema (vendored in
tests/schemas/devcontainer), and its post-create script clean under shellcheck."""

from static_support import ROOT, replace_in, tool

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
    result = tool("shellcheck", ROOT / ".devcontainer/post-create.sh")
    assert result.returncode == 0, result.stdout

