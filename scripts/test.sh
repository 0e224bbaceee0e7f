#!/usr/bin/env bash
# Runs Warren's whole test suite, as CI does:
#   1. go vet and every Go test with the race detector (in-process Warren nodes, real amqp091-go
#      clients); the rpc package runs against a Warren node and Debian's RabbitMQ;
#   2. Python interop (pika, kombu/py-amqp, oslo.messaging) against a Warren node process.
# Needs: Go, Debian's python3-pika python3-kombu python3-oslo.messaging rabbitmq-server
# (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

rabbit_port=${RABBIT_PORT:-5682}
warren_port=${WARREN_TEST_PORT:-5692}

echo "== go vet"
go vet ./...

echo "== reference RabbitMQ on 127.0.0.1:$rabbit_port"
bash scripts/rabbitmq.sh start "$rabbit_port"
export WARREN_TEST_RABBITMQ="amqp://guest:guest@127.0.0.1:$rabbit_port/"

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== python interop against a Warren node"
go build -o bin/warren ./cmd/node
data=$(mktemp -d)
bin/warren run --id interop --data-dir "$data" --amqp-addr "127.0.0.1:$warren_port" \
  --http-addr 127.0.0.1:$((warren_port + 10000)) --raft-addr 127.0.0.1:$((warren_port + 1400)) \
  --gossip-addr 127.0.0.1:$((warren_port + 2300)) --log-level warn 2>"$data/node.log" &
warren_pid=$!
trap 'kill $warren_pid 2>/dev/null; wait $warren_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$warren_port") 2>/dev/null && break
  sleep 0.1
done
if ! bash tests/interop/run.sh "amqp://guest:guest@127.0.0.1:$warren_port/"; then
  echo "--- Warren node log"; tail -50 "$data/node.log"
  exit 1
fi
