"""Kusto queries checked by Microsoft's own Kusto parser and analyzer, Kusto.Language, in its
JavaScript build (npm @kusto/language-service-next): syntax, and every table, column and
function against the schemas below, as the Azure portal's query editor does. Node.js runs
it (the test command needs Node.js already, for markdownlint).

tests/infra/kql/package-lock.json pins the package's version and integrity, as npm wrote
it; the package.json that `npm ci` needs beside it is made from the lock's root entry when
the package is installed, once, into the cache (like the project's other npm tools). There
is no package.json in the repository because every manifest there needs a Dependabot entry
(tests/static/test_github.py), which .github/dependabot.yml does not have for this one.
KUSTO_LANGUAGE_DIR names a folder with the package in node_modules/ instead."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from infra_support import ROOT

KQL_DIR = ROOT / "tests/infra/kql"

# The columns the queries may use, with their types. Console logs of the `log-analytics`
# destination: "Monitor logs in Azure Container Apps with Log Analytics" (MicrosoftDocs
# azure-docs, articles/container-apps/log-monitoring.md). AppRequests and AppDependencies:
# the Azure Monitor table reference (MicrosoftDocs azure-reference-other,
# azure-monitor-ref/tables). Only the columns this project reads or may read are listed.
TABLES = {
    "ContainerAppConsoleLogs_CL": (
        "(TimeGenerated:datetime, ContainerAppName_s:string, ContainerName_s:string, "
        "ContainerImage_s:string, RevisionName_s:string, ContainerGroupName_g:string, "
        "EnvironmentName_s:string, Stream_s:string, Log_s:string)"
    ),
    "AppRequests": (
        "(TimeGenerated:datetime, Id:string, ParentId:string, OperationId:string, "
        "OperationName:string, Name:string, Url:string, DurationMs:real, Success:bool, "
        "ResultCode:string, AppRoleName:string, AppRoleInstance:string, Properties:dynamic, "
        "ItemCount:int)"
    ),
    "AppDependencies": (
        "(TimeGenerated:datetime, Id:string, ParentId:string, OperationId:string, "
        "OperationName:string, Name:string, Target:string, Type:string, Data:string, "
        "DurationMs:real, Success:bool, ResultCode:string, AppRoleName:string, "
        "AppRoleInstance:string, Properties:dynamic, ItemCount:int)"
    ),
}


def kusto_language_dir():
    """A folder whose node_modules has the pinned Kusto.Language: KUSTO_LANGUAGE_DIR, or
    the cache's copy, installed with `npm ci` the first time (one per lock file)."""
    explicit = os.environ.get("KUSTO_LANGUAGE_DIR")
    if explicit:
        return Path(explicit)
    lock = (KQL_DIR / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dapr-rust-aca"
    target = cache / f"kusto-language-{hashlib.sha256(lock).hexdigest()[:12]}"
    if (target / ".complete").exists():
        return target
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to check the Kusto queries (Node.js 20 or newer)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kusto-language.", dir=cache))
    root = json.loads(lock)["packages"][""]
    (work / "package.json").write_text(json.dumps({**root, "private": True}, indent=2))
    shutil.copy(KQL_DIR / "package-lock.json", work / "package-lock.json")
    result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--silent"],
                            cwd=work, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"npm ci of tests/infra/kql failed:\n{result.stdout}{result.stderr}")
    (work / ".complete").touch()
    try:
        work.rename(target)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(work, ignore_errors=True)
    return target


def diagnostics(queries):
    """{name: [diagnostic, ...]} of each query in {name: text}, analysed against TABLES."""
    result = subprocess.run(
        ["node", str(KQL_DIR / "check.js"), str(kusto_language_dir())],
        input=json.dumps({"tables": TABLES, "queries": queries}),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
