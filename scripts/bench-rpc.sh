#!/usr/bin/env bash
# RPC benchmark: the same Go rpc code (client → server, oslo.messaging wire format) on Warren and
# on Debian's RabbitMQ, 1 and 16 concurrent callers; and Python oslo.messaging (client → server)
# on RabbitMQ, which is what OpenStack runs today. Figures come from one run on this machine:
# only the ratios between brokers in the same run mean anything.
#   scripts/bench-rpc.sh [--benchtime 5s] [--python-calls 3000]
set -euo pipefail
cd "$(dirname "$0")/.."
benchtime=5s
pycalls=3000
while [[ $# -gt 0 ]]; do
  case $1 in
    --benchtime) benchtime=$2; shift 2 ;;
    --python-calls) pycalls=$2; shift 2 ;;
    *) echo "bench-rpc.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
rabbit_port=${RABBIT_PORT:-5682}
warren_port=${WARREN_BENCH_PORT:-5694}
bash scripts/rabbitmq.sh start "$rabbit_port" >/dev/null
go build -o bin/warren ./cmd/node
data=$(mktemp -d)
bin/warren run --id rpcbench --data-dir "$data" --amqp-addr "127.0.0.1:$warren_port" \
  --http-addr "127.0.0.1:$((warren_port + 10000))" --raft-addr "127.0.0.1:$((warren_port + 1400))" \
  --gossip-addr "127.0.0.1:$((warren_port + 2300))" --log-level warn 2>"$data/node.log" &
wpid=$!
pypid=""
cleanup() { [[ -n $pypid ]] && kill "$pypid" 2>/dev/null; kill "$wpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$warren_port") 2>/dev/null && break; sleep 0.1; done

warren="amqp://guest:guest@127.0.0.1:$warren_port/"
rabbit="amqp://guest:guest@127.0.0.1:$rabbit_port/"
echo "| broker | client → server | callers | calls/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
# A benchmark that failed (or produced no figure) prints no row: its figures would describe a
# partial run.
for pair in "Warren $warren" "RabbitMQ $rabbit"; do
  set -- $pair
  if ! WARREN_TEST_BROKERS=$2 go test -run '^$' -bench BenchmarkCall -benchtime "$benchtime" ./rpc >"$data/gobench.out" 2>&1; then
    echo "bench-rpc.sh: the Go benchmark on $1 failed; no figure printed:" >&2
    tail -20 "$data/gobench.out" >&2
    exit 1
  fi
  rows=$(awk -v b="$1" '/^BenchmarkCall/ && /calls\/s/ {
      split($1, a, "callers="); split(a[2], c, "-");
      for (i = 1; i <= NF; i++) { if ($i == "calls/s") r = $(i-1); if ($i == "p50_ms") p = $(i-1); if ($i == "p99_ms") q = $(i-1) }
      printf "| %s | Go → Go | %s | %.0f | %s | %s |\n", b, c[1], r, p, q }' "$data/gobench.out")
  [[ $(grep -c . <<<"$rows") -ge 2 ]] || { echo "bench-rpc.sh: the Go benchmark on $1 reported no figures for both caller counts:" >&2; tail -20 "$data/gobench.out" >&2; exit 1; }
  echo "$rows"
done
topic="rpcbench_$$"
# The peer serves until its stdin closes: hold a fifo open for it.
mkfifo "$data/stdin"
exec 9<>"$data/stdin"
/usr/bin/python3 rpc/testdata/oslo_peer.py server --url "$rabbit" --topic "$topic" --server p1 --exchange rpcbench <"$data/stdin" >/dev/null 2>&1 &
pypid=$!
sleep 3
for callers in 1 16; do
  /usr/bin/python3 rpc/testdata/oslo_peer.py bench --url "$rabbit" --topic "$topic" --exchange rpcbench \
    --count "$pycalls" --callers "$callers" 2>"$data/pybench.err" >"$data/pybench.out" || true
  # Every caller must have made all its calls: a thread that died on an error would leave a
  # calls/s figure of a partial run.
  /usr/bin/python3 - "$data/pybench.out" "$pycalls" "$callers" <<'PY' || { tail -20 "$data/pybench.err" >&2; exit 1; }
import json, sys
path, count, callers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = open(path).read().strip().splitlines()
d = json.loads(lines[-1]) if lines else {}
want = max(1, count // callers) * callers
if "calls_per_s" not in d or d.get("calls") != want:
    sys.stderr.write("bench-rpc.sh: the Python benchmark with %d callers made %s of %d calls; no figure printed\n" % (callers, d.get("calls", 0), want))
    sys.exit(1)
print("| RabbitMQ | Python oslo → Python oslo | %d | %.0f | %.2f | %.2f |" % (d["callers"], d["calls_per_s"], d["p50_ms"], d["p99_ms"]))
PY
done
