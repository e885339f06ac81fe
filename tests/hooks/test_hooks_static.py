"""Static checks of infra/hooks: Python only, the standard library only, Python 3.8
syntax, documented and typed, and no Azure CLI anywhere (azd's token is the only sign-in)."""

import ast
import sys

import pytest

from hooks_support import HOOKS, ROOT

SOURCES = sorted(HOOKS.glob("*.py"))
OWN_MODULES = {path.stem for path in SOURCES}
AZURE_CLI_NAMES = {"az", "az.exe", "az.cmd"}


def parsed(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_hooks_are_python_only():
    assert {path.name for path in SOURCES} >= {"azure_api.py", "bootstrap.py", "postdeploy.py"}
    others = [p.name for p in HOOKS.iterdir() if p.suffix != ".py" and p.name != "__pycache__"]
    assert not others, f"not a Python hook: {others}"


def test_azd_runs_them_with_the_system_python():
    # A requirements.txt or pyproject.toml from infra/hooks up to the project root would make
    # azd create a virtual environment and pip-install it before every hook.
    for folder in (HOOKS, HOOKS.parent, ROOT):
        for name in ("requirements.txt", "pyproject.toml"):
            assert not (folder / name).exists(), f"{folder / name} turns the hooks into a Python project for azd"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_python_3_8_syntax(path):
    ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 8))
    # Annotations are strings, so 3.9+ generics in them do not fail at run time.
    assert "from __future__ import annotations" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_standard_library_only(path):
    for node in ast.walk(parsed(path)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in OWN_MODULES or top == "__future__", f"{path.name}: {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_documented_and_typed(path):
    tree = parsed(path)
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            untyped = [a.arg for a in arguments if a.annotation is None and a.arg not in ("self", "cls")]
            assert not untyped, f"{path.name}: {node.name}({', '.join(untyped)}) lacks type hints"
            assert node.returns is not None, f"{path.name}: {node.name} has no return type"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_azure_cli_and_no_shell(path):
    tree = parsed(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value.strip().lower() not in AZURE_CLI_NAMES, f"{path.name}:{node.lineno} names the Azure CLI"
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert called not in ("os.system", "os.popen") and not called.startswith("os.exec"), f"{path.name}: {called}"
            for keyword in node.keywords:
                assert not (keyword.arg == "shell" and ast.unparse(keyword.value) != "False"), f"{path.name}: shell=True"
    # Only the shared module runs a program, and that program is azd.
    runs = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).startswith("subprocess.")]
    if path.name == "azure_api.py":
        assert [ast.unparse(n.func) for n in runs] == ["subprocess.run"]
        assert 'shutil.which("azd")' in path.read_text(encoding="utf-8")
    else:
        assert not runs, f"{path.name} runs a program itself"
