#!/usr/bin/env bash
# Recovery time after kill -9 with N queued persistent messages (256 B) in a durable queue:
# fills a fresh Warren node (cmd/bench -workload fill), SIGKILLs it, restarts it and reports
# how long until it serves AMQP again, what the message store log says it recovered, and the
# node's RSS afterwards.
#   scripts/bench-recovery.sh [N]        (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
port=${WARREN_BENCH_PORT:-5695}
http=127.0.0.1:$((port + 10000))
go build -o bin/warren ./cmd/node
go build -o bin/bench ./cmd/bench
data=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT
start() {
  bin/warren run --id recovery --data-dir "$data/node" --amqp-addr "127.0.0.1:$port" --http-addr "$http" \
    --raft-addr "127.0.0.1:$((port + 1400))" --gossip-addr "127.0.0.1:$((port + 2300))" 2>>"$data/node.log" &
  pid=$!
  for _ in $(seq 1 6000); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$data/node.log"; return 1; }
    sleep 0.01
  done
  return 1
}
start
echo "filling $n persistent messages..."
bin/bench -url "amqp://guest:guest@127.0.0.1:$port/" -workload fill -count "$n" -queue recovery -slack 30m 2>/dev/null
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(date +%s.%N)
start
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/"$pid"/status)
depth=$(/usr/bin/python3 -c '
import base64, json, sys, urllib.request
req = urllib.request.Request("http://%s/api/queues" % sys.argv[1], headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
print(next(q.get("messages_ready") for q in json.load(urllib.request.urlopen(req)) if q["name"] == "recovery"))' "$http")
echo "messages: $n, recovered in queue: $depth"
echo "restart to AMQP ready: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
grep "messages recovered" "$data/node.log" | tail -1
echo "RSS after recovery: ${rss} MB"
