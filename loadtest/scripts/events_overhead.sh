#!/usr/bin/env bash
# One launch run (sync, 256 connections) against a fresh server on a temporary directory, with
# or without two SSE consumers (curl on GET /v1/events) and one webhook (webhook_sink.py, a
# loopback receiver answering 200) attached; prints the harness's launch line and, with them,
# how many events each consumer and the webhook received. docs/PERFORMANCE.md, "Events, audit
# and webhooks".
# Usage: events_overhead.sh HOLDFAST_BIN HOLDFAST_LOAD_BIN with|without REPORT.json
# LAUNCH_ARGS (environment) replaces the campaign's size: by default four times the harness's
# default seats and doses, so the launch lasts its 20 s instead of selling out in about 6 s
# (a short run is mostly the machine's drift).
set -euo pipefail
BIN=$1; LOAD=$2; MODE=$3; OUT=$4
D=$(mktemp -d /tmp/perf-XXXX)
head -c 32 /dev/urandom | base64 > $D/secret; head -c 32 /dev/urandom | base64 > $D/whsecret
EXTRA=()
if [ "$MODE" = with ]; then
  python3 "$(dirname "$0")/webhook_sink.py" $D/recv.port > $D/recv.log 2>&1 & RECV=$!
  for i in $(seq 50); do [ -s $D/recv.port ] && break; sleep 0.1; done
  EXTRA=(--webhook-url "http://127.0.0.1:$(cat $D/recv.port)/hook" --webhook-secret-file $D/whsecret)
fi
$BIN serve --data-dir $D/data --listen 127.0.0.1:0 --addr-file $D/addr --jwt-secret-file $D/secret "${EXTRA[@]}" > $D/server.log 2>&1 & SRV=$!
for i in $(seq 300); do [ -s $D/addr ] && curl -sf http://$(cat $D/addr)/readyz >/dev/null && break; sleep 0.1; done
ADDR=$(cat $D/addr)
if [ "$MODE" = with ]; then
  OP=$($BIN token --jwt-secret-file $D/secret --role operator --ttl 1h)
  CURLS=()
  for i in 1 2; do curl -sN -H "Authorization: Bearer $OP" http://$ADDR/v1/events > $D/sse$i.txt 2>/dev/null & CURLS+=($!); done
fi
$LOAD --url http://$ADDR --jwt-secret-file $D/secret --server-pid $SRV --scenario launch --connections 256 --duration 20s ${LAUNCH_ARGS:---slots-per-clinic 40 --doses 1600} --quiet --report $OUT > $D/load.txt 2>&1 || true
if [ "$MODE" = with ]; then
  sleep 0.5 # the sink writes its ids out every 0.2 s
  # The sink's CPU (user + system clock ticks): it shares the two cores with the server.
  SINK_TICKS=$(awk '{print $14 + $15}' /proc/$RECV/stat)
  CURL_TICKS=$(cat /proc/${CURLS[0]}/stat /proc/${CURLS[1]}/stat | awk '{t += $14 + $15} END {print t}')
  echo "sse lines: $(grep -c '^id:' $D/sse1.txt) $(grep -c '^id:' $D/sse2.txt); webhook deliveries: $(wc -l < $D/recv.log); webhook sink cpu: $(awk -v t=$SINK_TICKS -v hz=$(getconf CLK_TCK) 'BEGIN {printf "%.2f", t / hz}') s; SSE consumers (curl) cpu: $(awk -v t=$CURL_TICKS -v hz=$(getconf CLK_TCK) 'BEGIN {printf "%.2f", t / hz}') s"
fi
kill $SRV 2>/dev/null; wait $SRV 2>/dev/null || true
[ "$MODE" = with ] && { kill %1 %2 %3 2>/dev/null || true; kill $RECV 2>/dev/null || true; }
grep -E "ops/s|launch|sold|hold " $D/load.txt | head -8
rm -rf $D
