#!/bin/sh
# azd postdeploy hook (azure.yaml): finishes a deployment and checks that it works.
#
#   1. bootstrap: points the bootstrap job at the image order-processor now runs, starts
#      it (it creates the app's PostgreSQL role and schema; running it again is safe) and
#      waits for that execution to succeed;
#   2. apps: waits until the latest revisions of batch and order-processor are running
#      and healthy, restarting order-processor's once if it stays unhealthy (it retries
#      its database for a while at start-up, so this is rarely needed);
#   3. orders: waits for batch to log a "run finished" summary (the cron fires every
#      10 s) and checks that every order of its file is stored.
#
# It exits non-zero, saying what is wrong and how to look further, when a step fails.
# Run it again at any time with `azd hooks run postdeploy`. It needs the Azure CLI,
# logged in (`az login`: azd's own login does not log the Azure CLI in), and these
# values, which the Bicep outputs and azd passes to hooks:
#   AZURE_RESOURCE_GROUP, SERVICE_BATCH_NAME, SERVICE_ORDER_PROCESSOR_NAME,
#   BOOTSTRAP_JOB_NAME; optional: AZURE_SUBSCRIPTION_ID (else az's default
#   subscription), AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID (for the log commands).
# Time limits in seconds: BOOTSTRAP_TIMEOUT (300), APPS_TIMEOUT (300),
# BATCH_RUN_TIMEOUT (90), RESTART_AFTER (60); POLL_INTERVAL (10) between look-ups.
set -eu

BOOTSTRAP_TIMEOUT="${BOOTSTRAP_TIMEOUT:-300}"
APPS_TIMEOUT="${APPS_TIMEOUT:-300}"
BATCH_RUN_TIMEOUT="${BATCH_RUN_TIMEOUT:-90}"
POLL_INTERVAL="${POLL_INTERVAL:-10}"
# How long order-processor may stay running-but-unhealthy before its one restart.
RESTART_AFTER="${RESTART_AFTER:-60}"

say() { printf 'postdeploy: %s\n' "$*"; }
# Look-ups that are retried keep their errors here, to show if the step fails.
AZ_ERRORS="$(mktemp)"
trap 'rm -f "$AZ_ERRORS"' EXIT

# fail MESSAGE [HINT]: says what is wrong (and where to look), and stops.
fail() {
  printf 'postdeploy: FAILED: %s\n' "$1" >&2
  [ -z "${2:-}" ] || printf '%s\n' "$2" >&2
  if [ -s "$AZ_ERRORS" ]; then
    printf 'The last error of the Azure CLI:\n' >&2
    tail -n 5 "$AZ_ERRORS" >&2
  fi
  exit 1
}
now() { date +%s; }

# az with the options every call here needs: errors only, in the azd environment's
# subscription when it names one.
az_() {
  az "$@" --only-show-errors ${AZURE_SUBSCRIPTION_ID:+--subscription "$AZURE_SUBSCRIPTION_ID"}
}

check_prerequisites() {
  missing=""
  for name in AZURE_RESOURCE_GROUP SERVICE_BATCH_NAME SERVICE_ORDER_PROCESSOR_NAME BOOTSTRAP_JOB_NAME; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || missing="$missing $name"
  done
  [ -z "$missing" ] ||
    fail "not set:$missing. These are outputs of infra/main.bicep: run 'azd provision' first (or 'azd env refresh')."
  command -v az >/dev/null 2>&1 ||
    fail "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
  account="$(az_ account show --query name -o tsv 2>"$AZ_ERRORS")" ||
    fail "the Azure CLI is not logged in, or not to ${AZURE_SUBSCRIPTION_ID:-a subscription} (azd's login does not cover it): run 'az login'."
  RG="$AZURE_RESOURCE_GROUP"
  LOGS_WORKSPACE="${AZURE_LOG_ANALYTICS_WORKSPACE_CUSTOMER_ID:-<workspace customer id>}"
  say "checking resource group $RG (subscription: $account)"
}

# 1. The bootstrap job, with order-processor's current image.
run_bootstrap_job() {
  image="$(az_ containerapp show --name "$SERVICE_ORDER_PROCESSOR_NAME" --resource-group "$RG" \
    --query 'properties.template.containers[0].image' -o tsv)"
  [ -n "$image" ] || fail "cannot read the image of $SERVICE_ORDER_PROCESSOR_NAME"
  job_image="$(az_ containerapp job show --name "$BOOTSTRAP_JOB_NAME" --resource-group "$RG" \
    --query 'properties.template.containers[0].image' -o tsv)"
  if [ "$job_image" != "$image" ]; then
    say "bootstrap: pointing job $BOOTSTRAP_JOB_NAME at $image"
    az_ containerapp job update --name "$BOOTSTRAP_JOB_NAME" --resource-group "$RG" \
      --image "$image" -o none
  fi

  execution="$(az_ containerapp job start --name "$BOOTSTRAP_JOB_NAME" --resource-group "$RG" \
    --query name -o tsv)"
  [ -n "$execution" ] || fail "job $BOOTSTRAP_JOB_NAME did not start"
  say "bootstrap: started execution $execution (waiting up to ${BOOTSTRAP_TIMEOUT} s)"

  deadline=$(($(now) + BOOTSTRAP_TIMEOUT))
  last=""
  while :; do
    status="$(az_ containerapp job execution show --name "$BOOTSTRAP_JOB_NAME" --resource-group "$RG" \
      --job-execution-name "$execution" --query properties.status -o tsv 2>"$AZ_ERRORS" || true)"
    if [ "$status" != "$last" ]; then
      say "bootstrap: $execution is ${status:-not visible yet}"
      last="$status"
    fi
    case "$status" in
      Succeeded) return 0 ;;
      Failed | Stopped | Degraded) bootstrap_failed "ended $status" ;;
    esac
    [ "$(now)" -lt "$deadline" ] || bootstrap_failed "is still ${status:-unknown} after ${BOOTSTRAP_TIMEOUT} s"
    sleep "$POLL_INTERVAL"
  done
}

bootstrap_failed() {
  fail "bootstrap job $BOOTSTRAP_JOB_NAME: execution $execution $1. Without it order-processor cannot reach its database." \
    "Its logs (in Log Analytics a few minutes after the execution ends):
  az monitor log-analytics query --workspace $LOGS_WORKSPACE -o table --analytics-query \\
    \"ContainerAppConsoleLogs_CL | where ContainerJobName_s == '$BOOTSTRAP_JOB_NAME' and ContainerGroupName_s startswith '$execution' | project TimeGenerated, Log_s | order by TimeGenerated asc\""
}

# The latest revision of app $1, and its running and health states.
# A failed look-up counts as "unknown" (the next poll tries again).
read_revision_state() {
  revision="$(az_ containerapp show --name "$1" --resource-group "$RG" \
    --query properties.latestRevisionName -o tsv 2>"$AZ_ERRORS" || true)"
  states="$(az_ containerapp revision list --name "$1" --resource-group "$RG" --all \
    --query "[?name=='$revision'] | [0].[properties.runningState, properties.healthState]" -o tsv 2>"$AZ_ERRORS" || true)"
  running="$(printf '%s\n' "$states" | cut -f1)"
  health="$(printf '%s\n' "$states" | cut -f2)"
  revision="${revision:-$1 (latest revision unknown)}" running="${running:-unknown}" health="${health:-unknown}"
}

# Running (or RunningAtMaxScale), and Healthy, or None: a revision without health probes
# (a first provision leaves them off until the real image runs) reports no health.
is_ready() {
  case "$running" in Running*) ;; *) return 1 ;; esac
  case "$health" in Healthy | None) return 0 ;; *) return 1 ;; esac
}

# 2. Both apps' latest revisions running and healthy.
wait_until_apps_ready() {
  say "apps: waiting up to ${APPS_TIMEOUT} s for the latest revisions to be running and healthy"
  deadline=$(($(now) + APPS_TIMEOUT))
  restarted=no
  unhealthy_since=""
  batch_seen=""
  processor_seen=""
  while :; do
    read_revision_state "$SERVICE_BATCH_NAME"
    batch_revision="$revision" batch_state="$running/$health"
    is_ready && batch_ok=yes || batch_ok=no

    read_revision_state "$SERVICE_ORDER_PROCESSOR_NAME"
    processor_revision="$revision" processor_state="$running/$health" processor_running="$running"
    is_ready && processor_ok=yes || processor_ok=no

    [ "$batch_state" = "$batch_seen" ] || say "apps: $batch_revision is $batch_state"
    [ "$processor_state" = "$processor_seen" ] || say "apps: $processor_revision is $processor_state"
    batch_seen="$batch_state" processor_seen="$processor_state"

    [ "$batch_ok" = yes ] && [ "$processor_ok" = yes ] && return 0

    # Started but not healthy: it may have given up on its database before the
    # bootstrap created its role. One restart, after a grace period.
    if [ "$processor_ok" = no ] && [ "$restarted" = no ]; then
      case "$processor_running" in
        Running* | Degraded | Failed | ActivationFailed)
          [ -n "$unhealthy_since" ] || unhealthy_since="$(now)"
          if [ $(($(now) - unhealthy_since)) -ge "$RESTART_AFTER" ]; then
            say "apps: restarting $processor_revision (unhealthy for ${RESTART_AFTER} s after the bootstrap)"
            az_ containerapp revision restart --name "$SERVICE_ORDER_PROCESSOR_NAME" --resource-group "$RG" \
              --revision "$processor_revision" -o none
            restarted=yes
          fi
          ;;
        *) unhealthy_since="" ;;
      esac
    fi

    if [ "$(now)" -ge "$deadline" ]; then
      hint="Their logs (console: the app's own; system: Container Apps' events):"
      for app in "$SERVICE_BATCH_NAME" "$SERVICE_ORDER_PROCESSOR_NAME"; do
        for type in console system; do
          hint="$hint
  az containerapp logs show --name $app --resource-group $RG --type $type --tail 100"
        done
      done
      fail "after ${APPS_TIMEOUT} s: $batch_revision is $batch_state, $processor_revision is $processor_state (want Running and Healthy)" "$hint"
    fi
    sleep "$POLL_INTERVAL"
  done
}

# The value of "NAME": in the JSON object $2 (a number or a string without commas).
field() {
  printf '%s\n' "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

# Prints a summary line readably.
describe_run() {
  printf 'outcome %s at %s: read %s, inserted %s, already present %s, conflicts %s, rejected %s, deferred %s' \
    "$(field outcome "$1")" "$(field timestamp "$1")" "$(field read "$1")" "$(field inserted "$1")" \
    "$(field already_present "$1")" "$(field conflicts "$1")" "$(field rejected "$1")" "$(field deferred "$1")"
}

# 3. batch's latest "run finished" summary says every order is stored.
check_batch_run() {
  say "orders: waiting up to ${BATCH_RUN_TIMEOUT} s for batch to finish a run"
  deadline=$(($(now) + BATCH_RUN_TIMEOUT))
  summary=""
  while :; do
    # One JSON object a line; backslashes dropped in case the log stream escapes quotes.
    summaries="$(az_ containerapp logs show --name "$SERVICE_BATCH_NAME" --resource-group "$RG" \
      --revision "$batch_revision" --type console --format text --tail 200 2>"$AZ_ERRORS" |
      tr -d '\134' | grep '"message":"run finished"' | sed 's/^[^{]*//' || true)"
    summary="$(printf '%s\n' "$summaries" | tail -n 1)"
    if [ -n "$summary" ]; then
      outcome="$(field outcome "$summary")"
      total="$(field read "$summary")"
      inserted="$(field inserted "$summary")"
      present="$(field already_present "$summary")"
      for number in "$total" "$inserted" "$present"; do
        case "$number" in
          '' | *[!0-9]*) fail "cannot read batch's summary (read, inserted, already_present): $summary" ;;
        esac
      done
      case "$outcome" in
        completed)
          say "orders: latest run: $(describe_run "$summary")"
          if [ $((inserted + present)) -eq "$total" ]; then
            say "orders: stored: all $total orders of the file are in the database ($inserted new, $present already there)"
            return 0
          fi
          fail "batch's run completed but stored $((inserted + present)) of $total orders: $summary"
          ;;
        unchanged)
          say "orders: latest run: $(describe_run "$summary")"
          stored="$(printf '%s\n' "$summaries" | grep '"outcome":"completed"' | tail -n 1)"
          [ -z "$stored" ] || say "orders: the run that stored them: $(describe_run "$stored")"
          say "orders: stored: the file ($total orders) was stored completely by an earlier run; nothing was left to send"
          return 0
          ;;
      esac
    fi
    if [ "$(now)" -ge "$deadline" ]; then
      hint="batch's logs:
  az containerapp logs show --name $SERVICE_BATCH_NAME --resource-group $RG --type console --tail 100"
      [ -n "$summary" ] ||
        fail "no 'run finished' line from batch ($batch_revision) in ${BATCH_RUN_TIMEOUT} s: is the cron component scoped to it, and its sidecar up?" "$hint"
      fail "batch's latest run did not store every order: $(describe_run "$summary")" "Its summary: $summary
$hint"
    fi
    sleep "$POLL_INTERVAL"
  done
}

main() {
  check_prerequisites
  run_bootstrap_job
  wait_until_apps_ready
  check_batch_run
  say "OK: bootstrap succeeded, $batch_revision and $processor_revision are running and healthy, the orders are stored"
}

main "$@"
