#!/usr/bin/env bash
# Runs Warren's whole test suite, as CI does:
#   1. go vet;
#   2. every Go test with the race detector: in-process Warren nodes driven by the real
#      amqp091-go client, and the rpc package against both a Warren node process and Debian's
#      RabbitMQ (the library must be broker-neutral), including Python oslo.messaging interop;
#   3. Python interop (pika, kombu/py-amqp, oslo.messaging) against the Warren node process;
#   3b. every fuzz target for 5 s (scripts/fuzz.sh; about 2 min in all);
#   4. the chaos suite on a 3-process cluster (scripts/chaos.sh, 60 s);
#   5. the container image and the compose cluster's smoke test (scripts/docker-smoke.sh), then
#      the same for its TLS variant (scripts/docker-smoke.sh --tls);
#   6. the chaos suite on the compose cluster (scripts/chaos.sh --docker, 60 s).
# Needs Go, Debian's python3-pika python3-kombu python3-oslo.messaging rabbitmq-server, and a
# Docker engine with docker-compose (.ci/run installs and checks them). The chaos seed is
# $CHAOS_SEED (default: a new one each run, printed, so a failure can be replayed).
set -euo pipefail
cd "$(dirname "$0")/.."

rabbit_port=${RABBIT_PORT:-5682}
warren_port=${WARREN_TEST_PORT:-5699}

echo "== go vet"
go vet ./...

echo "== reference RabbitMQ on 127.0.0.1:$rabbit_port"
bash scripts/rabbitmq.sh start "$rabbit_port"

echo "== Warren node process on 127.0.0.1:$warren_port"
go build -o bin/warren ./cmd/node
data=$(mktemp -d)
bin/warren run --id testnode --data-dir "$data" --amqp-addr "127.0.0.1:$warren_port" \
  --http-addr 127.0.0.1:$((warren_port + 10000)) --raft-addr 127.0.0.1:$((warren_port + 1400)) \
  --gossip-addr 127.0.0.1:$((warren_port + 2300)) --log-level warn 2>"$data/node.log" &
warren_pid=$!
cleanup() {
  kill "$warren_pid" 2>/dev/null || true
  wait "$warren_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
node_log() { echo "--- Warren node log (tail)"; tail -50 "$data/node.log"; }
up=false
for _ in $(seq 1 150); do
  kill -0 "$warren_pid" 2>/dev/null || break
  if (exec 3<>/dev/tcp/127.0.0.1/"$warren_port") 2>/dev/null; then up=true; break; fi
  sleep 0.1
done
$up || { echo "test.sh: the Warren node did not start on 127.0.0.1:$warren_port"; node_log; exit 1; }

echo "== go test -race"
export WARREN_TEST_BROKERS="amqp://guest:guest@127.0.0.1:$warren_port/,amqp://guest:guest@127.0.0.1:$rabbit_port/"
go test -race -count=1 -timeout 20m ./... || { node_log; exit 1; }

echo "== python interop against Warren"
bash tests/interop/run.sh "amqp://guest:guest@127.0.0.1:$warren_port/" || { node_log; exit 1; }
cleanup
trap - EXIT

echo "== fuzz targets, 5 s each (longer: scripts/fuzz.sh --time 10m)"
bash scripts/fuzz.sh --time 5s

seed=${CHAOS_SEED:-$((RANDOM % 1000))}
echo "== chaos suite, 3 node processes, 60 s, seed $seed (replay: scripts/chaos.sh --seed $seed)"
bash scripts/chaos.sh --duration 60 --seed "$seed"

echo "== container image and compose cluster smoke test"
bash scripts/docker-smoke.sh

echo "== the compose cluster's TLS variant: smoke test"
bash scripts/docker-smoke.sh --tls

echo "== chaos suite, 3 containers, 60 s, seed $seed (replay: scripts/chaos.sh --docker --seed $seed)"
bash scripts/chaos.sh --docker --duration 60 --seed "$seed"
