#!/usr/bin/env bash
# Runs the benchmark (not part of scripts/test.sh): the real stack on this machine, release
# builds of both services with real daprd sidecars and a throwaway PostgreSQL under .local/,
# and writes target/bench/report.md and report.json (plus timestamped copies). It installs
# what is missing as scripts/test.sh does (PostgreSQL, daprd and Jaeger built from Go
# modules; Jaeger collects the traces of the export-on stack) and stops the PostgreSQL it
# started at the end. Arguments go to the
# benchmark: --quick for a smoke run of two minutes, --runs N, --seed S, --out DIR,
# --load-seconds N for the load test's sustained part (60 by default; loopback only).
# See docs/benchmark.md.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

PG_DATA="$STATE_DIR/postgres-bench"
STARTED_PG=""
finish() {
  [ -n "$STARTED_PG" ] && pg_stop "$PG_DATA"
  return 0
}
trap finish EXIT

require_node_for_postgres
ensure_rust
export SQLX_OFFLINE=true
start_test_server "$PG_DATA"
JAEGER="$(jaeger_path)"
export JAEGER

say "building both services and the benchmark (release; the first time takes several minutes)"
# The services are built alone, as a deployment builds them (and as the benchmark's own
# check that they are up to date does), not together with the benchmark's dependencies.
cargo build --release --locked -q --bins -p batch -p order-processor
cargo build --release --locked -q -p bench
say "benchmark: daprd $("$DAPRD" --version), $(psql "$TEST_DATABASE_URL" -XtAq -c 'SHOW server_version' | head -n 1)"
cargo run --release --locked -q -p bench -- "$@"
