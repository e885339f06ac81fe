#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: formatting, clippy, the offline
# checks (Dapr schemas, YAML, shell, sqlx offline data), then the unit, integration and
# end-to-end tests against a real PostgreSQL and real daprd sidecars. Not run here, being
# slower: scripts/checks/dapr-multi-app-run.sh (`dapr run -f .` with the Dapr CLI built
# from Go modules) and scripts/bench.sh (the benchmark report). It installs what is
# missing (PostgreSQL, daprd and the Jaeger trace collector built from Go modules, the
# Python checkers in a cached virtual environment) and starts a throwaway PostgreSQL under
# .local/ that it stops again at the end.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PG_DATA="$STATE_DIR/postgres-test"
STARTED_PG=""
finish() {
  [ -n "$STARTED_PG" ] && pg_stop "$PG_DATA"
  return 0
}
trap finish EXIT

# What can be known at once, before minutes of building: a Node.js new enough for the npm
# packages that tools/ pins (markdownlint-cli2; the PostgreSQL server when it is installed).
require_node_for tools/markdownlint
require_node_for_postgres
ensure_rust
export SQLX_OFFLINE=true

say "formatting: cargo fmt --check"
cargo fmt --all --check

say "lints: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -q -- -D warnings

say "dependencies: cargo deny check licenses bans sources"
ensure_cargo_deny
cargo deny --log-level error check licenses bans sources

say "offline checks"
VENV="$(python_venv tools/requirements.txt)"
for file in components/*.yaml; do
  kind="$(sed -n 's/^kind: //p' "$file" | tr '[:upper:]' '[:lower:]')"
  "$VENV/bin/check-jsonschema" -q --schemafile "tests/schemas/dapr/$kind-dapr-v1alpha1.json" "$file"
done
"$VENV/bin/check-jsonschema" -q --schemafile tests/schemas/dapr/dapr-run-file.json dapr.yaml
echo "components/ and dapr.yaml: valid against Dapr's schemas"
"$VENV/bin/yamllint" -s components/ dapr.yaml azure.yaml .github/ .yamllint.yaml
"$VENV/bin/shellcheck" -x scripts/*.sh scripts/checks/*.sh .ci/run
echo "YAML and shell scripts: clean"
"$VENV/bin/typos"
"$(markdownlint_bin)/markdownlint-cli2" "**/*.md" >/dev/null
mapfile -t DOCS < <(git ls-files '*.md')
"$VENV/bin/lychee" --offline --no-progress --include-fragments "${DOCS[@]}" >/dev/null
echo "docs: no typos, markdownlint clean, no broken local links"
GITLEAKS="$(go_tool gitleaks github.com/zricethezav/gitleaks/v8 v8.30.1)"
export GITLEAKS
"$GITLEAKS" git --no-banner --redact --log-level warn --config .gitleaks.toml .
echo "history: no secrets (gitleaks)"

say "infra/, azure.yaml, the azd hooks, Dockerfiles, workflows, dev container: offline checks (tests/infra, tests/hooks, tests/static)"
ACTIONLINT="$(actionlint_path)"
# tests/infra runs daprd with a placeholder revision's settings.
DAPRD="$(daprd_path)"
export ACTIONLINT DAPRD
CHECKOV_BIN="$(python_venv tools/requirements-checkov.txt)/bin/checkov" PATH="$VENV/bin:$PATH" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/infra tests/hooks tests/static

start_test_server "$PG_DATA"

say "sqlx offline data (.sqlx/) matches the queries"
check_sqlx_offline_data

# The trace test's collector: Jaeger v2, built from tools/jaeger once and cached.
JAEGER="$(jaeger_path)"
export JAEGER

# tests/testkit's alert test reads the alerts' queries with the checkers' Python.
PYTHON="$VENV/bin/python"
export PYTHON
say "tests: cargo test (unit, PostgreSQL integration, end to end with daprd $("$DAPRD" --version) and Jaeger $(jaeger_version))"
cargo test --workspace --locked
say "all checks and tests passed"
