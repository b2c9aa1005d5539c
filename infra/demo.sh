#!/usr/bin/env bash
# The main job on the embedded default: the lab, a local restic repository plus the off-site
# copy on the lab's S3, and Lifeline's Prefect server in the background (the first command starts it, the
# others reuse it; it keeps running so that every run stays browsable in its UI).
#   1. bring the lab up (a two-site call centre on this machine) and validate its plan;
#   2. back up its datasets: call recordings, the CRM database, the IVR configuration;
#   3. restore the recordings into a scratch folder and the CRM database into a new database,
#      each verified before it is put in place;
#   4. fail over to the DR site (database, DNS, the carrier's SIP routing, the IVR's announcement, agents),
#      call it as a customer would, then fail back, losing nothing;
#   5. rehearse a system-crash drill and write its after-action report (HTML);
#   6. print the run records.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
if [[ $(id -u) -eq 0 && -z ${LIFELINE_HOME:-} ]]; then
  export LIFELINE_HOME=/var/lib/lifeline-demo   # the lab user must reach it; /root is private
fi
export LIFELINE_HOME=${LIFELINE_HOME:-$HOME/.lifeline}
lifeline() { uv run --frozen lifeline "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "Bringing the lab up"
plan=$(lifeline lab up)
export LIFELINE_PLAN=$plan
lifeline lab heal >/dev/null   # a demo stopped half-way may have left a fault behind
lifeline validate

step "Backing up every dataset (with the off-site copy to S3)"
lifeline backup

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
step "Restoring the recordings into $scratch/recordings, verified"
lifeline restore recordings --target "$scratch/recordings"
ls "$scratch/recordings" | head -5 >&2

crm_server=$(uv run --frozen python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["datasets"]["crm-db"]["postgres"]["dsn"].rsplit("/", 1)[0])' "$plan")
restored_db="crm_restored_$(date +%Y%m%d%H%M%S)"
step "Restoring the CRM database into $restored_db, row counts proven"
lifeline restore crm-db --target "$crm_server/$restored_db"

step "Point-in-time recovery: WAL archived by pgBackRest, a full backup, then the CRM back to a second ago"
lifeline pitr backup --type full
moment=$(date --utc +%Y-%m-%dT%H:%M:%S.%N+00:00)
sleep 1
lifeline restore crm-db --to-time "$moment"   # side mode: a staging cluster, left running for inspection

if [[ ${LIFELINE_DEMO_FAILOVER:-1} == 1 ]]; then
  step "Main's database goes down; failing over to dr"
  lifeline lab fault main-db-down >/dev/null
  lifeline failover --yes --reason "demo: main database down" --json > "$scratch/failover.json"
  step "A customer calls: the carrier now routes to dr, whose IVR plays the emergency announcement"
  lifeline call --listen 20
  step "Failing back to main"
  lifeline failback --yes --reason "demo: main repaired" --json > "$scratch/failback.json"
  cat "$scratch/failover.json" "$scratch/failback.json"
  lifeline lab heal >/dev/null   # the fault's record; heal never touches data or a replaced primary

  step "Drill: a system crash, timed, scored and cleaned up"
  lifeline drill --scenario system-crash
  report="$LIFELINE_HOME/drill-report.html"
  lifeline report --out "$report"
  step "After-action report: $report"
fi

step "Run records"
lifeline runs --last 10

step "The lab is still running"
lifeline lab status >&2 || true
printf 'The lab keeps running in %s/lab (plan %s); `make test` leaves it alone.\n' "$LIFELINE_HOME" "$plan" >&2
printf 'Stop it with:  LIFELINE_HOME=%q uv run --frozen lifeline lab down   (--purge also deletes its data)\n' \
  "$LIFELINE_HOME" >&2
if [[ -z ${PREFECT_API_URL:-} ]]; then
  lifeline server status >&2 || true
  printf 'Every run above is in its UI; stop the server with:  LIFELINE_HOME=%q uv run --frozen lifeline server stop\n' \
    "$LIFELINE_HOME" >&2
fi
