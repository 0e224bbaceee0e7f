#!/usr/bin/env bash
# Starts or stops Debian's rabbitmq-server as a reference broker on a spare loopback port, so it
# never takes Warren's 5672. State lives under $RABBIT_DIR (default /tmp/warren-rabbitmq).
#   scripts/rabbitmq.sh start [PORT [MGMT_PORT]]   (default 5682; waits until it accepts AMQP,
#                                                 and HTTP when MGMT_PORT enables the management plugin)
#   scripts/rabbitmq.sh stop
# RABBIT_NODENAME names the Erlang node (default warrenref@localhost): set it, and RABBIT_DIR, to
# run a second broker beside the first (the Go tests do).
# With RABBIT_TLS_DIR (ca.pem, rabbit.pem, rabbit-key.pem, e.g. from `node certs --nodes rabbit`)
# and RABBIT_TLS_PORT it also listens for amqps on that port (no client certificates asked).
set -euo pipefail
cmd=${1:-start}
port=${2:-${RABBIT_PORT:-5682}}
mgmt=${3:-${RABBIT_MGMT_PORT:-}}
dir=${RABBIT_DIR:-/tmp/warren-rabbitmq}
export RABBITMQ_NODENAME=${RABBIT_NODENAME:-warrenref@localhost}
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
# Erlang distribution port: 20000 above the AMQP port, or below it when that would pass 65535
# (tests start brokers on any free port).
dist=$((port + 20000))
[ "$dist" -le 65535 ] || dist=$((port - 20000))
export RABBITMQ_DIST_PORT=${RABBIT_DIST_PORT:-$dist}
export RABBITMQ_MNESIA_BASE=$dir/mnesia
export RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_PID_FILE=$dir/rabbit.pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq
export HOME=${HOME:-/root}

case $cmd in
start)
  command -v rabbitmq-server >/dev/null || { echo "rabbitmq.sh: rabbitmq-server is not installed (apt-get install -y rabbitmq-server)" >&2; exit 1; }
  mkdir -p "$dir/mnesia" "$dir/log"
  echo '[].' > "$dir/enabled_plugins"
  [ -n "$mgmt" ] && echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq:rabbitmq "$dir"
  # Same defaults a benchmark user gets from a stock install, plus loopback guest access.
  printf 'loopback_users.guest = true\nlisteners.tcp.default = 127.0.0.1:%s\n' "$port" > "$dir/rabbitmq.conf"
  [ -n "$mgmt" ] && printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$mgmt" >> "$dir/rabbitmq.conf"
  if [[ -n ${RABBIT_TLS_DIR:-} ]]; then
    mkdir -p "$dir/tls"
    cp "$RABBIT_TLS_DIR/ca.pem" "$RABBIT_TLS_DIR/rabbit.pem" "$RABBIT_TLS_DIR/rabbit-key.pem" "$dir/tls/"
    id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq:rabbitmq "$dir/tls"
    printf 'listeners.ssl.default = 127.0.0.1:%s\nssl_options.cacertfile = %s\nssl_options.certfile = %s\nssl_options.keyfile = %s\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n' \
      "${RABBIT_TLS_PORT:?RABBIT_TLS_PORT is needed with RABBIT_TLS_DIR}" "$dir/tls/ca.pem" "$dir/tls/rabbit.pem" "$dir/tls/rabbit-key.pem" >> "$dir/rabbitmq.conf"
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then echo "rabbitmq.sh: port $port already answers"; exit 0; fi
  nohup rabbitmq-server > "$dir/server.out" 2>&1 &
  for _ in $(seq 1 240); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && { [ -z "$mgmt" ] || (exec 3<>/dev/tcp/127.0.0.1/"$mgmt") 2>/dev/null; }; then
      echo "rabbitmq.sh: RabbitMQ listening on 127.0.0.1:$port${mgmt:+ (management on $mgmt)}"; exit 0
    fi
    sleep 0.5
  done
  echo "rabbitmq.sh: RabbitMQ did not start; see $dir/server.out and $dir/log" >&2
  tail -20 "$dir/server.out" >&2 || true
  exit 1
  ;;
stop)
  rabbitmqctl -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
  ;;
*) echo "usage: rabbitmq.sh start [PORT] | stop" >&2; exit 2 ;;
esac
