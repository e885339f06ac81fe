#!/usr/bin/env bash
# Runs the whole system with the Dapr CLI: `dapr run -f .` with the repository's dapr.yaml
# (both services, each with its daprd sidecar, the components of components/), after doing
# what a run file cannot: starting PostgreSQL (the same throwaway cluster under .local/ as
# scripts/run.sh, unless DATABASE_URL points elsewhere), setting up its role, building the
# services and setting the environment dapr.yaml expects. It uses a `dapr` of the version
# tools/dapr-cli/go.mod pins (built once from Go modules when none is installed) and the
# daprd scripts/run.sh uses. Ctrl-C stops everything it started; so does
# `dapr stop -f .` from another terminal, and `dapr list` shows the apps.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PG_DATA="$STATE_DIR/postgres"
PG_PORT="${PG_PORT:-55432}"

# The ports dapr.yaml gives the apps and their sidecars.
while read -r port; do
  port_free "$port" || die "port $port is in use (scripts/run.sh or another run?); stop it first"
done < <(sed -nE 's/^ +(appPort|daprHTTPPort|daprGRPCPort): ([0-9]+)$/\2/p' dapr.yaml)
# PostgreSQL's, when this run will start it; and a Node.js that can install it.
if [ -z "${DATABASE_URL:-}" ]; then
  pid_file_alive "$PG_DATA/postmaster.pid" || check_ports PG_PORT
  require_node_for_postgres
fi

ensure_rust
DAPR="$(dapr_cli_path)"
# Where the CLI looks for .dapr/bin/daprd: ~/.dapr after `dapr init`, else .local/dapr-runtime.
DAPR_RUNTIME_PATH="$(dapr_runtime_path)"
export DAPR_RUNTIME_PATH
say "using the Dapr CLI $(dapr_cli_version) at $DAPR, daprd $("$DAPR_RUNTIME_PATH/.dapr/bin/daprd" --version)"

CLI_PID=""
STARTED_PG=""
# shellcheck disable=SC2329 # called by the EXIT trap (shellcheck misses it before an exit)
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$CLI_PID" ] && kill -0 "$CLI_PID" 2>/dev/null; then
    kill -INT -- "-$CLI_PID" 2>/dev/null || kill -INT "$CLI_PID" 2>/dev/null || true
    wait "$CLI_PID" 2>/dev/null || true
  fi
  [ -n "$STARTED_PG" ] && pg_stop "$PG_DATA"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

use_local_database "$PG_DATA" "$PG_PORT"

say "building the services (dapr.yaml runs them from target/debug)"
env -u CARGO_TARGET_DIR SQLX_OFFLINE=true cargo build --locked --bins -q

# The CLI hands its environment to both sidecars and both apps: the sqldb component reads
# SQLDB_CONNECTION_STRING, order-processor DATABASE_URL, and the sidecars send the apps
# APP_API_TOKEN, which the apps require (new each run). No DAPR_API_TOKEN: the CLI keeps its
# bookkeeping (for `dapr list` and `dapr stop -f`) in the sidecars' metadata API and calls
# it without a token; the sidecars listen on 127.0.0.1 only.
export DATABASE_URL SQLDB_CONNECTION_STRING="$DATABASE_URL"
APP_API_TOKEN="$(random_secret)"
export APP_API_TOKEN
unset DAPR_API_TOKEN

cat >&2 <<INFO

  Starting: $DAPR run -f .
  Logs:     target/debug/.dapr/logs/ (the apps' logs also appear below)
  Orders:   curl -s http://127.0.0.1:3502/v1.0/invoke/order-processor/method/orders
  Run now:  curl -s -X POST http://127.0.0.1:3502/v1.0/invoke/batch/method/runs
  Database: psql '$DATABASE_URL' -c 'SELECT * FROM app.orders'
  Apps:     $DAPR list
  Press Ctrl-C (or run '$DAPR stop -f .') to stop.

INFO
# The CLI puts itself and everything it starts into a process group of its own, which
# Ctrl-C in this terminal does not reach: the trap passes the signal on to that group.
"$DAPR" run -f . &
CLI_PID=$!
trap 'kill -INT -- "-$CLI_PID" 2>/dev/null || kill -INT "$CLI_PID" 2>/dev/null || true; STOPPING=yes' INT TERM
STOPPING=""
status=0
while :; do
  if wait "$CLI_PID"; then status=0; else status=$?; fi
  kill -0 "$CLI_PID" 2>/dev/null || break
done
CLI_PID=""
# Stopped on request: a success, whatever the CLI's status after it killed its processes.
[ -z "$STOPPING" ] || status=0
exit "$status"
