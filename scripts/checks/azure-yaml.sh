#!/usr/bin/env bash
# Checks azure.yaml offline:
#   - against azd's own schema (tests/schemas/azd/azure.yaml.json, vendored);
#   - against the project's stricter rules (tests/schemas/azd/project-rules.json): both
#     services are container apps built from their Dockerfile, `language: docker`,
#     context the repository root, postdeploy hook present. azd's schema alone accepts
#     a misspelled host or a missing language;
#   - that the paths it names exist: each service's project folder and Dockerfile, its
#     build context (the repository root), each hook's script (project hooks from the
#     root, a service's hooks from its project folder; a shell hook's script must be
#     executable, azd runs it directly; a python hook's is run by the interpreter);
# and, when infra/main.parameters.json exists, that file against ARM's
# deploymentParameters schema (tests/schemas/arm/deploymentParameters.json).
#
#   CHECKERS_VENV=/path/to/venv scripts/checks/azure-yaml.sh [AZURE_YAML]
#
# CHECKERS_VENV is a Python virtual environment with check-jsonschema (the one
# scripts/test.sh installs from tools/requirements.txt). AZURE_YAML defaults to the
# repository's azure.yaml; another file is checked as if it were that one (paths in it
# are resolved from the repository root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ -n "${CHECKERS_VENV:-}" ] ||
  die "CHECKERS_VENV is not set: point it at a virtual environment with check-jsonschema (see tools/requirements.txt)"
CHECK_JSONSCHEMA="$CHECKERS_VENV/bin/check-jsonschema"
PYTHON="$CHECKERS_VENV/bin/python"
[ -x "$CHECK_JSONSCHEMA" ] || die "$CHECK_JSONSCHEMA not found: install check-jsonschema into $CHECKERS_VENV"

AZURE_YAML="$(realpath "${1:-$ROOT/azure.yaml}")"
[ -f "$AZURE_YAML" ] || die "$AZURE_YAML not found"
cd "$ROOT"

ERRORS=0
fail() {
  printf 'error: %s\n' "$*" >&2
  ERRORS=$((ERRORS + 1))
}

# validate SCHEMA FILE PROBLEM: check-jsonschema's findings, shown only when there are any.
validate() {
  local out
  if ! out="$("$CHECK_JSONSCHEMA" --schemafile "$1" "$2" 2>&1)"; then
    printf '%s\n' "$out" >&2
    fail "$3"
  fi
}

validate tests/schemas/azd/azure.yaml.json "$AZURE_YAML" "azure.yaml does not match azd's schema (above)"
validate tests/schemas/azd/project-rules.json "$AZURE_YAML" \
  "azure.yaml breaks the project's rules, tests/schemas/azd/project-rules.json (above)"

# The paths azure.yaml names, one `kind<TAB>name<TAB>path` line each, read with the
# YAML parser check-jsonschema itself uses.
paths="$("$PYTHON" - "$AZURE_YAML" <<'EOF'
import sys
from ruamel.yaml import YAML

doc = YAML(typ="safe").load(open(sys.argv[1], encoding="utf-8")) or {}
for name, svc in (doc.get("services") or {}).items():
    if not isinstance(svc, dict) or "project" not in svc:
        continue
    project = svc["project"]
    docker = svc.get("docker") or {}
    print(f"project\t{name}\t{project}")
    print(f"dockerfile\t{name}\t{project}/{docker.get('path', './Dockerfile')}")
    print(f"context\t{name}\t{project}/{docker.get('context', '.')}")
def hooks(hooks, base, owner):
    for event, hook in (hooks or {}).items():
        for variant in (hook.get("posix"), hook) if isinstance(hook, dict) else ():
            if isinstance(variant, dict) and variant.get("run"):
                kind = variant.get("kind") or variant.get("shell") or "sh"
                print(f"hook-{kind}\t{owner}{event}\t{base}/{variant['run']}")
                break

hooks(doc.get("hooks"), ".", "")
for name, svc in (doc.get("services") or {}).items():
    if isinstance(svc, dict):
        hooks(svc.get("hooks"), svc.get("project", "."), f"{name} ")
EOF
)" || die "cannot read $AZURE_YAML"

while IFS=$'\t' read -r kind name path; do
  [ -n "$kind" ] || continue
  case "$kind" in
    project) [ -d "$path" ] || fail "service $name: project folder $path does not exist" ;;
    dockerfile) [ -f "$path" ] || fail "service $name: Dockerfile $path does not exist" ;;
    context)
      if [ ! -d "$path" ]; then
        fail "service $name: build context $path does not exist"
      elif [ "$(cd "$path" && pwd)" != "$ROOT" ]; then
        fail "service $name: build context $path is not the repository root (the Dockerfiles copy the whole workspace)"
      fi
      ;;
    hook-*)
      if [ ! -f "$path" ]; then
        fail "hook $name: $path does not exist"
      elif [ "$kind" = hook-sh ] && [ ! -x "$path" ]; then
        fail "hook $name: $path is not executable (azd runs it directly): chmod +x $path"
      fi
      ;;
  esac
done <<<"$paths"

if [ -f infra/main.parameters.json ]; then
  validate tests/schemas/arm/deploymentParameters.json infra/main.parameters.json \
    "infra/main.parameters.json does not match ARM's deploymentParameters schema (above)"
fi

if [ "$ERRORS" -gt 0 ]; then
  printf 'azure.yaml: %d problem(s)\n' "$ERRORS" >&2
  exit 1
fi
if [ -f infra/main.parameters.json ]; then
  echo "azure.yaml and infra/main.parameters.json: valid"
else
  echo "azure.yaml: valid (no infra/main.parameters.json to check)"
fi
