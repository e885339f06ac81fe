#!/usr/bin/env bash
# Runs the whole system on this machine: PostgreSQL (a throwaway cluster under .local/,
# unless DATABASE_URL points elsewhere), order-processor and batch, each with its own
# daprd sidecar, the cron binding sending the bundled orders every 10 s, and Jaeger
# collecting the traces of both apps and both sidecars (TRACES=auto, the default: when
# Jaeger is built already, as scripts/test.sh leaves it; on: build it if needed, once;
# off). It installs what is missing (PostgreSQL, daprd built from Go
# modules) and shows the orders arriving in the database. Ctrl-C stops everything it
# started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR="$STATE_DIR/run"
PG_DATA="$STATE_DIR/postgres"
# Every port the run listens on: the apps, their sidecars' HTTP, gRPC, internal gRPC and
# metrics ports, and PostgreSQL's. Each can be changed through its variable.
PG_PORT="${PG_PORT:-55432}"
OP_PORT="${OP_PORT:-6001}" OP_HTTP="${OP_HTTP:-3501}" OP_GRPC="${OP_GRPC:-50001}"
OP_INTERNAL_GRPC="${OP_INTERNAL_GRPC:-$((OP_GRPC + 100))}" OP_METRICS="${OP_METRICS:-9091}"
BATCH_PORT="${BATCH_PORT:-6002}" BATCH_HTTP="${BATCH_HTTP:-3502}" BATCH_GRPC="${BATCH_GRPC:-50002}"
BATCH_INTERNAL_GRPC="${BATCH_INTERNAL_GRPC:-$((BATCH_GRPC + 100))}" BATCH_METRICS="${BATCH_METRICS:-9092}"

PIDS=()
STARTED_PG=""
cleanup() {
  trap - INT TERM EXIT
  # Finish even if whatever read our output is gone (a pipe closed by the same Ctrl-C).
  trap '' PIPE
  say "stopping everything this run started"
  stop_processes "${PIDS[@]}"
  [ -n "$STARTED_PG" ] && pg_stop "$PG_DATA"
  say "stopped; logs are in ${RUN_DIR#"$ROOT"/}/logs"
}

# Before anything is built or started: a port in use would otherwise show only as a
# process that is "not ready" a minute later. PostgreSQL's counts only when this run will
# start it (no DATABASE_URL, the cluster of .local/postgres not running already).
PORT_VARS=(OP_PORT OP_HTTP OP_GRPC OP_INTERNAL_GRPC OP_METRICS
  BATCH_PORT BATCH_HTTP BATCH_GRPC BATCH_INTERNAL_GRPC BATCH_METRICS)
if [ -z "${DATABASE_URL:-}" ] && ! pid_file_alive "$PG_DATA/postmaster.pid"; then PORT_VARS+=(PG_PORT); fi
check_ports "${PORT_VARS[@]}"
[ -n "${DATABASE_URL:-}" ] || require_node_for_postgres

ensure_rust
DAPRD_BIN="$(daprd_path)"
say "using daprd $("$DAPRD_BIN" --version) at $DAPRD_BIN"
TRACES="${TRACES:-auto}"
case "$TRACES" in
  on) ;;
  off) ;;
  auto) if [ -n "${JAEGER:-}" ] || [ -x "$(jaeger_cache_path)" ]; then TRACES=on; else
    TRACES=off
    say "traces: off (Jaeger is not built yet; TRACES=on builds it, once)"
  fi ;;
  *) die "TRACES must be auto, on or off, got '$TRACES'" ;;
esac

trap cleanup EXIT
# Ctrl-C (or SIGTERM) is how a run ends: clean up through the EXIT trap, and succeed.
trap 'exit 0' INT TERM
use_local_database "$PG_DATA" "$PG_PORT"

say "building the services"
(cd "$ROOT" && SQLX_OFFLINE=true cargo build --locked --bins -q)

rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR/logs"
LOGS="$RUN_DIR/logs"
CONFIG="$ROOT/components/config.yaml"
if [ "$TRACES" = on ]; then
  start_jaeger "$LOGS/jaeger.log"
  PIDS+=("$JAEGER_PID")
  # Both sidecars export their spans to Jaeger, as do both apps.
  CONFIG="$RUN_DIR/config.yaml"
  with_otel "$ROOT/components/config.yaml" "$JAEGER_OTLP_GRPC_ADDRESS" >"$CONFIG"
  export OTEL_EXPORTER_OTLP_ENDPOINT
  printf '%s\n' "$JAEGER_QUERY_URL" >"$RUN_DIR/jaeger-url"
  say "Jaeger collects the traces (query API on $JAEGER_QUERY_URL)"
fi
# As in Container Apps, the apps take calls on their API routes with APP_API_TOKEN (which
# the sidecars send) only. Beyond Container Apps, whose sidecars are reachable from inside
# the replica only, the sidecars here take calls with DAPR_API_TOKEN only: on a shared
# machine any local process could reach them. Both new per run.
DAPR_API_TOKEN="$(random_secret)" APP_API_TOKEN="$(random_secret)"
export DAPR_API_TOKEN APP_API_TOKEN
# daprd runs in $RUN_DIR, where the Configuration's SQLite name-resolution file lives. As
# in Container Apps, a sidecar that exits is started again: order-processor asks its
# sidecar to restart when the sidecar started without the binding (PostgreSQL was down).
sidecar() { # APP_ID APP_PORT HTTP GRPC INTERNAL_GRPC METRICS [ENV=VALUE...]
  local app_id="$1" app_port="$2" http="$3" grpc="$4" internal="$5" metrics="$6"
  shift 6
  (
    cd "$RUN_DIR"
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
    while :; do
      env "$@" "$DAPRD_BIN" --app-id "$app_id" --app-port "$app_port" \
        --app-protocol http --dapr-http-port "$http" --dapr-grpc-port "$grpc" \
        --dapr-internal-grpc-port "$internal" --metrics-port "$metrics" \
        --dapr-listen-addresses 127.0.0.1 --resources-path "$ROOT/components" \
        --config "$CONFIG" --log-level warn &
      child=$!
      wait "$child" || true
      echo "run.sh: daprd of $app_id exited; starting it again in 1 s"
      sleep 1
    done
  ) >>"$LOGS/$app_id-daprd.log" 2>&1 &
  PIDS+=($!)
}

say "starting order-processor on :$OP_PORT and its sidecar on :$OP_HTTP"
env DATABASE_URL="$DATABASE_URL" APP_PORT="$OP_PORT" DAPR_HTTP_PORT="$OP_HTTP" DAPR_GRPC_PORT="$OP_GRPC" \
  "$ROOT/target/debug/order-processor" >"$LOGS/order-processor.log" 2>&1 &
PIDS+=($!)
sidecar order-processor "$OP_PORT" "$OP_HTTP" "$OP_GRPC" "$OP_INTERNAL_GRPC" "$OP_METRICS" \
  SQLDB_CONNECTION_STRING="$DATABASE_URL"
wait_http "http://127.0.0.1:$OP_PORT/readyz" 60 || die "order-processor is not ready; see $LOGS"

say "starting batch on :$BATCH_PORT and its sidecar on :$BATCH_HTTP (cron: every 10 s)"
env APP_PORT="$BATCH_PORT" DAPR_HTTP_PORT="$BATCH_HTTP" ${ORDERS_FILE:+ORDERS_FILE="$ORDERS_FILE"} \
  "$ROOT/target/debug/batch" >"$LOGS/batch.log" 2>&1 &
PIDS+=($!)
sidecar batch "$BATCH_PORT" "$BATCH_HTTP" "$BATCH_GRPC" "$BATCH_INTERNAL_GRPC" "$BATCH_METRICS"
wait_http "http://127.0.0.1:$BATCH_PORT/readyz" 60 || die "batch is not ready; see $LOGS"

cat >&2 <<INFO

  Running. Logs: ${LOGS#"$ROOT"/}/
  Orders:        curl -s -H 'dapr-api-token: $DAPR_API_TOKEN' http://127.0.0.1:$BATCH_HTTP/v1.0/invoke/order-processor/method/orders
  Run now:       curl -s -X POST -H 'dapr-api-token: $DAPR_API_TOKEN' http://127.0.0.1:$BATCH_HTTP/v1.0/invoke/batch/method/runs
  Database:      psql '$DATABASE_URL' -c 'SELECT * FROM app.orders'
$([ "$TRACES" = on ] && printf '  Last trace:    scripts/trace.sh   (the last run, from the cron tick to the binding)\n')
  (The apps take API calls from their sidecars only; the tokens above are new each run.)
  Press Ctrl-C to stop.

INFO
last=""
while true; do
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process stopped unexpectedly; see $LOGS"
  done
  count="$(psql "$DATABASE_URL" -XtAq -c "SELECT count(*) FROM app.orders" 2>/dev/null || echo '?')"
  summary="$( (grep '"run finished"' "$LOGS/batch.log" 2>/dev/null || true) | tail -n 1 |
    sed -E 's/.*"outcome":"([a-z_]+)".*"read":([0-9]+).*"submitted":([0-9]+).*"inserted":([0-9]+).*"already_present":([0-9]+).*"rejected":([0-9]+).*"duration_ms":([0-9]+).*/last run: \1, read \2, submitted \3, new \4, already there \5, rejected \6, \7 ms/')"
  line="orders in the database: $count${summary:+ | $summary}"
  if [ "$line" != "$last" ]; then printf '%s  %s\n' "$(date +%T)" "$line"; fi
  last="$line"
  sleep 2
done
