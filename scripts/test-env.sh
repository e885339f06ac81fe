#!/usr/bin/env bash
# Prints, as export lines, the variables scripts/test.sh gives the tests, after installing
# what they need as test.sh does and starting its PostgreSQL (.local/postgres-test, left
# running: `pg_ctl -D .local/postgres-test stop` stops it), so that one test can run alone:
#
#   eval "$(./scripts/test-env.sh)"
#   cargo test -p testkit --test e2e -- a_file_with_bad_orders
#
# Its progress goes to stderr; only the export lines go to stdout.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
{
  ensure_rust
  VENV="$(python_venv tools/requirements.txt)"
  start_test_server "$STATE_DIR/postgres-test"
  JAEGER="$(jaeger_path)"
} >&2
for name in TEST_DATABASE_URL PG_BINDIR DAPRD JAEGER; do
  printf 'export %s=%q\n' "$name" "${!name}"
done
printf 'export PYTHON=%q SQLX_OFFLINE=true\n' "$VENV/bin/python"
