"""What azure.yaml promises beyond its schemas (scripts/checks/azure-yaml.sh checks those):
each service's apiVersion is the Container Apps API version its Bicep uses, the hooks'
scripts are where azd looks for them, and requiredVersions.azd is new enough for every
feature the file uses. Each check is also shown to fail on a broken copy."""

import re
from pathlib import Path

import pytest
import yaml

from static_support import ROOT, replace_in

CONTAINER_APPS_VERSION = re.compile(r"'Microsoft\.App/containerApps@([^']+)'")

# The oldest azd with each feature azure.yaml uses (Azure/azure-dev, cli/azd/CHANGELOG.md).
FEATURES = [
    ("docker.remoteBuild", (1, 10, 0), lambda doc: any(
        (s.get("docker") or {}).get("remoteBuild") for s in doc["services"].values())),
    ("a service's apiVersion", (1, 10, 2), lambda doc: any("apiVersion" in s for s in doc["services"].values())),
    ("deploy-time Bicep (controlled revisions, #5694)", (1, 20, 0), lambda doc: any(
        (ROOT / "infra" / f"{s.get('module', n)}.parameters.json").is_file() for n, s in doc["services"].items())),
    ("hooks of kind python (#7451)", (1, 23, 15), lambda doc: any(h.get("kind") == "python" for h, _ in hooks(doc))),
    ("a service hook outside its service folder (#7689)", (1, 24, 0), lambda doc: any(
        base != ROOT and not resolve(base, h["run"]).is_relative_to(base) for h, base in hooks(doc))),
]


def hooks(doc):
    """(hook, the folder its run path is relative to): the project's hooks are relative to
    the project (azure.yaml's folder), a service's to the service's project folder."""
    found = [(hook, ROOT) for hook in (doc.get("hooks") or {}).values()]
    for service in doc["services"].values():
        base = (ROOT / service["project"]).resolve()
        found += [(hook, base) for hook in (service.get("hooks") or {}).values()]
    return found


def resolve(base, run):
    return (base / run).resolve()


def problems_of(path):
    doc = yaml.safe_load(Path(path).read_text())
    problems = []
    for name, service in doc["services"].items():
        bicep = ROOT / "infra" / f"{service.get('module', name)}.bicep"
        versions = set(CONTAINER_APPS_VERSION.findall(bicep.read_text())) if bicep.is_file() else set()
        if versions != {service.get("apiVersion")}:
            problems.append(f"{name}: apiVersion {service.get('apiVersion')!r}, but {bicep.relative_to(ROOT)} "
                            f"uses Microsoft.App/containerApps@{sorted(versions)}")
    for hook, base in hooks(doc):
        script = resolve(base, hook.get("run", ""))
        if not script.is_relative_to(ROOT):
            problems.append(f"hook {hook.get('run')!r} (from {base.relative_to(ROOT)}/) is outside the project")
        elif not script.is_file():
            problems.append(f"hook {hook.get('run')!r} (from {base.relative_to(ROOT) or '.'}/): "
                            f"{script.relative_to(ROOT)} does not exist")
        if hook.get("kind") != "python" or {"posix", "windows", "shell"} & set(hook):
            problems.append(f"hook {hook.get('run')!r}: not one Python hook (kind python, no shell variants)")
    declared = tuple(int(x) for x in re.findall(r"\d+", doc["requiredVersions"]["azd"])[:3])
    for feature, version, used in FEATURES:
        if used(doc) and declared < version:
            problems.append(f"requiredVersions.azd {doc['requiredVersions']['azd']!r}: {feature} needs "
                            f"{'.'.join(map(str, version))}")
    return problems


def test_azure_yaml_keeps_its_promises():
    assert problems_of(ROOT / "azure.yaml") == []


@pytest.mark.parametrize(
    "old, new, complaint",
    [
        ('apiVersion: "2026-01-01"\n    host', 'apiVersion: "2025-07-01"\n    host', "batch: apiVersion '2025-07-01'"),
        ("run: ../../infra/hooks/bootstrap.py", "run: infra/hooks/bootstrap.py",
         "src/order-processor/infra/hooks/bootstrap.py does not exist"),
        ("run: ../../infra/hooks/bootstrap.py", "run: ../../../infra/hooks/bootstrap.py", "is outside the project"),
        ("    kind: python\n    run: infra/hooks/postdeploy.py", "    shell: sh\n    run: infra/hooks/postdeploy.py",
         "not one Python hook"),
        ('azd: ">= 1.24.0"', 'azd: ">= 1.23.15"', "a service hook outside its service folder (#7689) needs 1.24.0"),
        ('azd: ">= 1.24.0"', 'azd: ">= 1.10.2"', "controlled revisions"),
    ],
)
def test_a_broken_azure_yaml_breaks_a_promise(copy_of, old, new, complaint):
    broken = copy_of("azure.yaml")
    replace_in(broken, old, new)
    problems = problems_of(broken)
    assert any(complaint in p for p in problems), problems
