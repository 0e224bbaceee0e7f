#!/usr/bin/env bash
# Recovery after kill -9 with N queued persistent messages (default 256 B) in one durable queue:
# fills a fresh Warren node (cmd/bench -workload fill), reports the publish rate and the node's
# RSS during the fill, SIGKILLs it, restarts it and reports how long until it serves AMQP
# again, what the message store log says it recovered, the queue depth, and the RSS. It prints
# no recovery time unless all N messages came back (and fails, exit 1, otherwise); a fill that
# failed (a nack, a dropped connection) stops it before the kill.
#   scripts/bench-recovery.sh [N [SIZE]]        (default 1000000 256)
# WARREN_BENCH_PORT sets the AMQP port (default 5695); the node also uses the next two ports
# (Raft, gossip) and PORT+10000 (HTTP). The data dir goes under WARREN_BENCH_DIR (default
# $TMPDIR): N × (SIZE + ~60) bytes of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
size=${2:-256}
port=${WARREN_BENCH_PORT:-5695}
http=127.0.0.1:$((port + 10000))
go build -o bin/warren ./cmd/node
go build -o bin/bench ./cmd/bench
data=$(mktemp -d -p "${WARREN_BENCH_DIR:-${TMPDIR:-/tmp}}")
pid=""
sampler=""
cleanup() {
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT
start() {
  bin/warren run --id recovery --data-dir "$data/node" --amqp-addr "127.0.0.1:$port" --http-addr "$http" \
    --raft-addr "127.0.0.1:$((port + 1))" --gossip-addr "127.0.0.1:$((port + 2))" 2>>"$data/node.log" &
  pid=$!
  for _ in $(seq 1 60000); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$data/node.log"; return 1; }
    sleep 0.01
  done
  return 1
}
mb() { awk -v k="$1" '$1 == k":" {printf "%.0f", $2/1024}' /proc/"$pid"/status; }
depth() {
  /usr/bin/python3 -c '
import base64, json, sys, urllib.request
req = urllib.request.Request("http://%s/api/queues" % sys.argv[1], headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
print(next(q.get("messages_ready") for q in json.load(urllib.request.urlopen(req)) if q["name"] == "recovery"))' "$http"
}

start
echo "filling $n persistent messages of $size B..."
# Peak RSS while filling, sampled (VmHWM also counts the start-up).
(peak=0; while kill -0 "$pid" 2>/dev/null; do
  r=$(awk '$1 == "VmRSS:" {print int($2/1024)}' /proc/"$pid"/status 2>/dev/null || echo 0)
  ((r > peak)) && peak=$r && echo "$peak" >"$data/fill-peak"
  sleep 0.5
done) &
sampler=$!
if ! fill=$(bin/bench -url "amqp://guest:guest@127.0.0.1:$port/" -workload fill -count "$n" -size "$size" -queue recovery -slack 300m 2>"$data/bench.err"); then
  echo "bench-recovery.sh: the fill failed; no figures:" >&2
  tail -5 "$data/bench.err" >&2
  exit 1
fi
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
sampler=""
before=$(depth)
[[ $before == "$n" ]] || { echo "bench-recovery.sh: FAILED: the queue holds $before messages after a fill of $n confirmed ones; no figures" >&2; exit 1; }
echo "$fill"
echo "RSS at the end of the fill: $(mb VmRSS) MB (peak sampled during the fill: $(cat "$data/fill-peak" 2>/dev/null || echo ?) MB)"
echo "message store on disk: $(du -sm "$data/node/messages" | cut -f1) MB"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
sync
t0=$(date +%s.%N)
start
t1=$(date +%s.%N)
ready_rss=$(mb VmRSS)
# Every one of the N confirmed messages must be back before any time is worth printing.
d=""
for _ in $(seq 1 600); do
  d=$(depth 2>/dev/null || echo "?")
  [[ $d == "$n" ]] && break
  sleep 0.1
done
if [[ $d != "$n" ]]; then
  echo "bench-recovery.sh: FAILED: $d of $n confirmed messages in the queue after the restart; no recovery time printed" >&2
  tail -20 "$data/node.log" >&2
  exit 1
fi
echo "messages: $n, recovered in queue: $d"
echo "restart to AMQP ready: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
grep "msgstore: recovered" "$data/node.log" | tail -1
grep "messages recovered" "$data/node.log" | tail -1
echo "RSS after recovery: ${ready_rss} MB (peak during recovery: $(mb VmHWM) MB)"
