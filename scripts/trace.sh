#!/usr/bin/env bash
# Shows one trace of the system scripts/run.sh is running, as a tree of spans with their
# service, duration and main attributes, read from Jaeger's query API: the last run's
# (its trace id is on batch's "run finished" log line), or TRACE_ID's.
#   scripts/trace.sh [TRACE_ID]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR="$STATE_DIR/run"
[ -f "$RUN_DIR/jaeger-url" ] ||
  die "no traces: start the system with scripts/run.sh (with TRACES=on if Jaeger is not built yet)"
QUERY_URL="$(cat "$RUN_DIR/jaeger-url")"
# fetch TRACE_ID: writes the trace to $RUN_DIR/trace.json; fails when Jaeger has no such
# trace (yet: the apps send their spans every 5 s).
fetch() {
  local status
  status="$(curl -sS -o "$RUN_DIR/trace.json" -w '%{http_code}' "$QUERY_URL/api/traces/$1")" ||
    die "Jaeger does not answer at $QUERY_URL: is scripts/run.sh still running?"
  [ "$status" = 200 ] || [ "$status" = 404 ] || die "Jaeger answered $status"
  [ "$status" = 200 ]
}

if [ -n "${1:-}" ]; then
  [[ "$1" =~ ^[0-9a-f]{32}$ ]] || die "a trace id is 32 lowercase hex digits, got '$1'"
  fetch "$1" || die "Jaeger has no trace $1 (yet: the apps send their spans every 5 s)"
  TRACE_ID="$1"
else
  # The newest run whose spans have arrived.
  TRACE_ID=""
  for id in $( (grep '"run finished"' "$RUN_DIR/logs/batch.log" 2>/dev/null || true) | tail -n 3 |
    sed -nE 's/.*"trace_id":"([0-9a-f]{32})".*/\1/p' | tac); do
    if fetch "$id"; then TRACE_ID="$id"; break; fi
  done
  [ -n "$TRACE_ID" ] || die "no run's trace in Jaeger yet; try again after the next tick"
fi
say "trace $TRACE_ID ($QUERY_URL/api/traces/$TRACE_ID)"
python3 - "$RUN_DIR/trace.json" <<'PY'
import json, sys

KEYS = ("trigger", "outcome", "orders", "orders.read", "orders.inserted", "rows",
        "http.response.status_code")
with open(sys.argv[1], encoding="utf-8") as answer:
    trace = json.load(answer)["data"][0]
services = {key: p["serviceName"] for key, p in trace["processes"].items()}
spans = {s["spanID"]: s for s in trace["spans"]}
children = {}
for span in spans.values():
    parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    parent = parents[0] if parents and parents[0] in spans else None
    children.setdefault(parent, []).append(span)

def show(span, depth):
    tags = {t["key"]: t["value"] for t in span.get("tags", [])}
    shown = " ".join(f"{k}={tags[k]}" for k in KEYS if k in tags)
    service, name = services[span["processID"]], span["operationName"]
    millis = span["duration"] / 1000
    print(f"{depth * 2 * chr(32)}{service}: {name} {millis:.1f} ms {shown}".rstrip())
    for child in sorted(children.get(span["spanID"], []), key=lambda s: s["startTime"]):
        show(child, depth + 1)

for root in sorted(children.get(None, []), key=lambda s: s["startTime"]):
    show(root, 0)
PY
