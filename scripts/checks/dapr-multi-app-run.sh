#!/usr/bin/env bash
# End-to-end check of dapr.yaml, the Dapr multi-app run file: `dapr run -f` with the real
# Dapr CLI (the version tools/dapr-cli/go.mod pins, built once from Go modules when no
# such `dapr` is installed) starts both services and their sidecars, and the bundled
# orders reach PostgreSQL through the cron binding, service invocation and the PostgreSQL
# binding. Opt-in (scripts/test.sh does not run it): about 5 s when everything is built,
# plus about 4 minutes once to build the CLI (and 6 to 10 for daprd, if scripts/run.sh or
# scripts/test.sh has not built it yet).
#
#   scripts/checks/dapr-multi-app-run.sh
#
# It starts a throwaway PostgreSQL (.local/postgres-dapr-run, on a free port) with a fresh
# `orders` database, builds the services, and runs the repository's dapr.yaml unchanged
# from a temporary directory that also holds a copy of components/ with the cron firing
# every second (as the end-to-end tests do) and target/debug/ linking to the built
# binaries; the CLI runs the sidecars there, so their name-resolution file and logs stay
# out of the repository. It needs the ports dapr.yaml names to be free (stop
# scripts/run.sh or scripts/dapr-run.sh first). It waits until every bundled order is in
# the `orders` table, checks `dapr list`, both apps' /readyz and a call from batch's
# sidecar to order-processor, then stops everything it started with `dapr stop -f` and
# makes sure nothing is left running. On failure it prints the tails of the logs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

WAIT_SECS="${WAIT_SECS:-90}"
PG_DATA="$STATE_DIR/postgres-dapr-run"
STARTED=$SECONDS
WORK=""
CLI_PID=""
STARTED_PG=""
PASSED=""

# Everything the CLI starts is in its process group: it makes itself a group leader
# before it starts anything. (Zombies, which init reaps, do not count.)
group_alive() {
  [ -n "$CLI_PID" ] &&
    ps -eo pgid=,stat= | awk -v g="$CLI_PID" '$1 == g && $2 !~ /^Z/ { n++ } END { exit !n }'
}
group_ps() { ps -eo pgid=,pid=,stat=,args= | awk -v g="$CLI_PID" '$1 == g' | cut -c1-300 >&2; }
run_alive() { [ -n "$CLI_PID" ] && { kill -0 "$CLI_PID" 2>/dev/null || group_alive; }; }

# Stops the run, if there is one: `dapr stop -f`, then SIGINT (as Ctrl-C would, and what
# `dapr stop -f` sends) to the group, or to the CLI when it has no group yet; SIGKILL for
# whatever is still there 15 s later.
stop_run() {
  run_alive || { CLI_PID=""; return 0; }
  "$DAPR" stop -f "$WORK" >/dev/null 2>&1 || true
  kill -INT -- "-$CLI_PID" 2>/dev/null || kill -INT "$CLI_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while run_alive && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if run_alive; then
    echo "still running 15 s after dapr stop -f, killed:" >&2
    group_ps
    kill -KILL -- "-$CLI_PID" 2>/dev/null || kill -KILL "$CLI_PID" 2>/dev/null || true
  fi
  wait "$CLI_PID" 2>/dev/null || true
  CLI_PID=""
}

show_logs() {
  local file
  for file in "$WORK/cli.log" "$WORK"/target/debug/.dapr/logs/*.log "$PG_DATA/server.log"; do
    [ -s "$file" ] || continue
    printf '\n--- %s (last 25 lines) ---\n' "${file#"$WORK"/}" >&2
    tail -n 25 "$file" | cut -c1-400 >&2
  done
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  [ -z "$PASSED" ] && [ -n "$CLI_PID" ] && show_logs
  stop_run
  [ -n "$STARTED_PG" ] && pg_stop "$PG_DATA"
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# The ports dapr.yaml gives the apps and their sidecars.
while read -r port; do
  port_free "$port" || die "port $port, which dapr.yaml names, is in use (scripts/run.sh or another run?)"
done < <(sed -nE 's/^ +(appPort|daprHTTPPort|daprGRPCPort): ([0-9]+)$/\2/p' dapr.yaml)

require_node_for_postgres
ensure_rust
command -v jq >/dev/null || apt_install jq
DAPR="$(dapr_cli_path)"
DAPR_RUNTIME_PATH="$(dapr_runtime_path)"
export DAPR_RUNTIME_PATH
say "Dapr CLI $(dapr_cli_version) at $DAPR, daprd $("$DAPR_RUNTIME_PATH/.dapr/bin/daprd" --version)"

say "building the services"
env -u CARGO_TARGET_DIR SQLX_OFFLINE=true cargo build --locked --bins -q

# The check's own cluster: stopped at the end even when a run killed earlier left it running.
STARTED_PG=yes
ADMIN_URL="$(pg_start "$PG_DATA" "$(free_port)")"
PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN_URL" -Xq \
  -c "DROP DATABASE IF EXISTS orders WITH (FORCE)"
DATABASE_URL="$(pg_orders_database "$ADMIN_URL" "$PG_DATA.app-password")"
ORDERS_ADMIN_URL="${ADMIN_URL%/postgres}/orders"

# The run directory: dapr.yaml as it is, components/ with a fast cron, target/debug/ with
# the binaries, so that every path in dapr.yaml resolves as it does in the repository.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dapr-multi-app-run.XXXXXX")"
cp dapr.yaml "$WORK/dapr.yaml"
mkdir -p "$WORK/components" "$WORK/target/debug"
for file in components/*.yaml; do
  sed -E 's/"@every [0-9]+[a-z]+"/"@every 1s"/' "$file" >"$WORK/$file"
done
grep -q '"@every 1s"' "$WORK/components/cron.yaml" ||
  die "components/cron.yaml has no \"@every ...\" schedule to speed up; update this check"
ln -s "$ROOT/target/debug/order-processor" "$ROOT/target/debug/batch" "$WORK/target/debug/"

# The environment dapr.yaml expects (its header): the CLI passes it on to the sidecars
# (SQLDB_CONNECTION_STRING for the sqldb component, APP_API_TOKEN) and the apps.
export DATABASE_URL SQLDB_CONNECTION_STRING="$DATABASE_URL"
APP_API_TOKEN="$(random_secret)"
export APP_API_TOKEN
unset DAPR_API_TOKEN

say "dapr run -f (dapr.yaml, cron every second)"
(cd "$WORK" && exec "$DAPR" run -f .) </dev/null >"$WORK/cli.log" 2>&1 &
CLI_PID=$!

expected="$(grep -c '"orderid"' src/batch/orders.json)"
deadline=$((SECONDS + WAIT_SECS))
count=0
while :; do
  kill -0 "$CLI_PID" 2>/dev/null || die "dapr run -f exited early (logs below)"
  # The table appears when order-processor has run its migrations.
  if [ "$(psql "$ORDERS_ADMIN_URL" -XtAq -c "SELECT to_regclass('app.orders') IS NOT NULL")" = t ]; then
    count="$(psql "$ORDERS_ADMIN_URL" -XtAq -c "SELECT count(*) FROM app.orders")" || count=0
  fi
  [ "$count" = "$expected" ] && break
  [ $SECONDS -lt $deadline ] ||
    die "$count of the $expected bundled orders in PostgreSQL after ${WAIT_SECS} s (logs below)"
  sleep 0.5
done
echo "all $expected bundled orders are in PostgreSQL, $((SECONDS - STARTED)) s after the start"

# What the CLI knows about the run: both apps, started from this run file.
list="$("$DAPR" list -o json)"
apps="$(jq -r --arg file "$WORK/dapr.yaml" '[.[] | select(.runTemplatePath == $file)]
  | sort_by(.appId) | .[] | "\(.appId) \(.appPort) \(.httpPort) \(.daprdPid)"' <<<"$list")"
ids="$(awk '{print $1}' <<<"$apps" | tr '\n' ' ')"
[ "$ids" = "batch order-processor " ] ||
  die "dapr list does not show batch and order-processor started from this run file: $list"
while read -r app app_port http_port daprd_pid; do
  curl -sf -o /dev/null "http://127.0.0.1:$app_port/readyz" || die "$app is not ready on port $app_port"
  echo "$app answers /readyz on :$app_port (sidecar on :$http_port)"
  # dapr.yaml keeps placement and the scheduler off, as scripts/run.sh does.
  ! tr '\0' '\n' <"/proc/$daprd_pid/cmdline" | grep -qE '^--(placement|scheduler)-host-address' ||
    die "$app's sidecar was given a placement or scheduler address: $(tr '\0' ' ' <"/proc/$daprd_pid/cmdline")"
  if [ "$app" = batch ]; then BATCH_HTTP="$http_port"; fi
done <<<"$apps"

# Service invocation through the sidecars, which found each other in one name-resolution file.
stored="$(curl -sf "http://127.0.0.1:$BATCH_HTTP/v1.0/invoke/order-processor/method/orders?limit=100" |
  jq '.orders | length')" || die "batch's sidecar cannot invoke order-processor"
[ "$stored" = "$expected" ] || die "order-processor lists $stored orders through the sidecars, not $expected"
echo "batch's sidecar invokes order-processor: $stored orders listed"
names="$(find "$WORK" -name 'dapr-names.db' | sed "s|^$WORK/||")"
[ "$names" = "target/debug/dapr-names.db" ] || die "name-resolution files: ${names:-none} (expected one, in target/debug)"

say "dapr stop -f"
"$DAPR" stop -f "$WORK"
deadline=$((SECONDS + 15))
while run_alive && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
if run_alive; then
  group_ps
  die "processes of the run are still there 15 s after dapr stop -f"
fi
wait "$CLI_PID" 2>/dev/null || true
CLI_PID=""
! pgrep -f -- "$WORK" >/dev/null || die "a process still refers to the run directory: $(pgrep -a -f -- "$WORK")"
echo "dapr stop -f stopped both apps, both sidecars and the CLI"

PASSED=yes
say "dapr.yaml: passed in $((SECONDS - STARTED)) s"
