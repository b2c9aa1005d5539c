#!/usr/bin/env bash
# A plain shell failover: the baseline tests/benchmarks/failover.py runs next to Lifeline's flow.
#
# The same recovery steps as Lifeline's default runbook, with nothing around them (no preflight,
# approval, fencing, record or measurements):
#   1. promote dr's standby: `pg_ctl promote -w` over ssh, with the given key and known_hosts
#      (host keys verified: StrictHostKeyChecking=yes, no other known_hosts, no agent, no config);
#   2. switch the DNS record: Route 53 UPSERT to dr's value, then GetChange until INSYNC; with
#      DNS_CLIENT=curl (default) the REST API signed by curl's --aws-sigv4 (no aws CLI here),
#      with DNS_CLIENT=python a tiny `python -c` with boto3;
#   3. poll dr's health URL with curl every PROBE_INTERVAL seconds until PROBE_ROUNDS consecutive
#      HTTP 200s; recovered = the start of the first of those rounds (Lifeline's definition).
#
# Input, all from the environment:
#   SSH_HOST SSH_PORT SSH_USER SSH_KEY SSH_KNOWN_HOSTS   dr's database host
#   PG_CTL PGDATA                                        pg_ctl and the standby's data directory there
#   AWS_ENDPOINT_URL AWS_REGION AWS_ENV_FILE             Route 53 (moto in the lab); AWS_ENV_FILE holds
#                                                        AWS_ACCESS_KEY_ID=... lines (sourced)
#   DNS_ZONE DNS_RECORD DNS_VALUE DNS_TTL                the record and dr's value
#   HEALTH_URL PROBE_INTERVAL PROBE_ROUNDS               e.g. http://127.0.0.1:8082/health 1 3
#   DNS_CLIENT (optional, curl)                          curl or python
#   PYTHON (optional, python3)                           an interpreter with boto3, for DNS_CLIENT=python
#   PROBE_TIMEOUT (optional, 120)                        give up when not recovered by then
#
# Output on stdout, one event a line: `NAME EPOCH_SECONDS`, NAME in started, promoted,
# dns_switched, recovered, done. Exit 0 when recovered, 1 otherwise (the reason on stderr).
set -euo pipefail

now() { echo "${EPOCHREALTIME}"; }
micros() { local t=${EPOCHREALTIME}; echo "${t/./}"; }
event() { echo "$1 $(now)"; }

event started
: "${SSH_HOST:?}" "${SSH_PORT:?}" "${SSH_USER:?}" "${SSH_KEY:?}" "${SSH_KNOWN_HOSTS:?}" "${PG_CTL:?}" "${PGDATA:?}"
: "${AWS_REGION:?}" "${AWS_ENV_FILE:?}" "${DNS_ZONE:?}" "${DNS_RECORD:?}" "${DNS_VALUE:?}" "${DNS_TTL:?}"
: "${HEALTH_URL:?}" "${PROBE_INTERVAL:?}" "${PROBE_ROUNDS:?}"
PYTHON=${PYTHON:-python3}
DNS_CLIENT=${DNS_CLIENT:-curl}
export AWS_ENDPOINT_URL AWS_REGION DNS_RECORD DNS_VALUE DNS_TTL
PROBE_TIMEOUT=${PROBE_TIMEOUT:-120}

# 1. promote
ssh -F /dev/null -p "$SSH_PORT" -i "$SSH_KEY" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$SSH_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null \
    -o ConnectTimeout=5 "$SSH_USER@$SSH_HOST" "'$PG_CTL' promote -w -t 60 -D '$PGDATA'" >&2
event promoted

# 2. DNS switch
set -a
# shellcheck disable=SC1090
. "$AWS_ENV_FILE"
set +a
zone="${DNS_ZONE%.}."

dns_switch_curl() {  # the Route 53 REST API, SigV4-signed by curl itself
    local api=${AWS_ENDPOINT_URL:-https://route53.amazonaws.com}/2013-04-01 answer zone_id change_id status
    local -a sign=(-sS --fail --max-time 10 --aws-sigv4 "aws:amz:$AWS_REGION:route53")
    # The key pair reaches curl through a config file on a pipe (printf is a shell builtin): never argv.
    curl() { command curl -K <(printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY") "$@"; }
    answer=$(curl "${sign[@]}" "$api/hostedzonesbyname?dnsname=$zone&maxitems=10")
    zone_id=$(grep -o "<Id>/hostedzone/[^<]*</Id><Name>$zone</Name>" <<<"$answer" | sed 's|<Id>/hostedzone/||; s|</Id>.*||')
    [ -n "$zone_id" ] || { echo "failover.sh: no hosted zone $zone" >&2; return 1; }
    answer=$(curl "${sign[@]}" -H "Content-Type: application/xml" --data-binary @- "$api/hostedzone/$zone_id/rrset/" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change>
<Action>UPSERT</Action><ResourceRecordSet><Name>$DNS_RECORD</Name><Type>A</Type><TTL>$DNS_TTL</TTL>
<ResourceRecords><ResourceRecord><Value>$DNS_VALUE</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
</Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>
XML
)
    change_id=$(grep -o "<Id>[^<]*</Id>" <<<"$answer" | head -n 1 | sed 's|<Id>||; s|</Id>||; s|^/change/||')
    status=$(grep -o "<Status>[^<]*</Status>" <<<"$answer" | sed 's|<[^>]*>||g')
    while [ "$status" != INSYNC ]; do
        [ -n "$change_id" ] || { echo "failover.sh: unexpected answer: $answer" >&2; return 1; }
        sleep 1
        answer=$(curl "${sign[@]}" "$api/change/$change_id")
        status=$(grep -o "<Status>[^<]*</Status>" <<<"$answer" | sed 's|<[^>]*>||g')
    done
}

dns_switch_python() {  # boto3, in a tiny python -c
    ZONE=$zone "$PYTHON" -c '
import os, time, boto3
e = os.environ
r53 = boto3.client("route53", region_name=e["AWS_REGION"], endpoint_url=e.get("AWS_ENDPOINT_URL") or None)
zone_id = next(z["Id"] for z in r53.list_hosted_zones_by_name(DNSName=e["ZONE"])["HostedZones"] if z["Name"] == e["ZONE"])
change = r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT",
    "ResourceRecordSet": {"Name": e["DNS_RECORD"], "Type": "A", "TTL": int(e["DNS_TTL"]),
                          "ResourceRecords": [{"Value": e["DNS_VALUE"]}]}}]})["ChangeInfo"]
while change["Status"] != "INSYNC":
    time.sleep(1)
    change = r53.get_change(Id=change["Id"])["ChangeInfo"]
'
}

case $DNS_CLIENT in
    curl) dns_switch_curl ;;
    python) dns_switch_python ;;
    *) echo "failover.sh: DNS_CLIENT must be curl or python, not $DNS_CLIENT" >&2; exit 2 ;;
esac
event dns_switched

# 3. poll until PROBE_ROUNDS consecutive 200s
interval_us=$(awk -v s="$PROBE_INTERVAL" 'BEGIN { printf "%d", s * 1000000 }')
deadline_us=$(( $(micros) + ${PROBE_TIMEOUT%.*} * 1000000 ))
streak=0
first=""
while :; do
    round_us=$(micros)
    at=$(now)
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$HEALTH_URL" || true)
    if [ "$code" = 200 ]; then
        [ "$streak" -eq 0 ] && first=$at
        streak=$((streak + 1))
        if [ "$streak" -ge "$PROBE_ROUNDS" ]; then
            echo "recovered $first"
            event done
            exit 0
        fi
    else
        streak=0
    fi
    if [ "$(micros)" -gt "$deadline_us" ]; then
        echo "failover.sh: $HEALTH_URL not healthy $PROBE_ROUNDS times in a row within $PROBE_TIMEOUT s (last: $code)" >&2
        exit 1
    fi
    left_us=$(( interval_us - ($(micros) - round_us) ))
    if [ "$left_us" -gt 0 ]; then
        sleep "$(printf '%d.%06d' $((left_us / 1000000)) $((left_us % 1000000)))"
    fi
done
