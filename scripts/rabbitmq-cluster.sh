#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster from Debian's rabbitmq-server, on spare loopback ports, as the
# reference for replicated-queue benchmarks (scripts/bench-quorum.sh).
#   scripts/rabbitmq-cluster.sh up            start wq1..wq3@localhost and cluster them
#   scripts/rabbitmq-cluster.sh down          stop every node and remove the cluster's state
#   scripts/rabbitmq-cluster.sh kill I        SIGKILL node I's Erlang VM
#   scripts/rabbitmq-cluster.sh start I       restart node I on its data (it rejoins by itself)
#   scripts/rabbitmq-cluster.sh pid I         the OS pid of node I's Erlang VM
#   scripts/rabbitmq-cluster.sh leader QUEUE  the node number (1..3) of QUEUE's quorum leader
# Node i takes AMQP on 127.0.0.1:$((RMQ_PORT_BASE + i)) (default 5781..5783) and Erlang
# distribution on that + 20000 (25781..25783); state lives under $RMQ_CLUSTER_DIR
# (default /tmp/warren-rmq-cluster). The nodes share an Erlang cookie through the rabbitmq
# user's home (Debian's wrapper runs them as that user), or $HOME/.erlang.cookie when not root.
set -euo pipefail
base=${RMQ_PORT_BASE:-5780}
dir=${RMQ_CLUSTER_DIR:-/tmp/warren-rmq-cluster}
size=3
die() { echo "rabbitmq-cluster.sh: $*" >&2; exit 1; }
[[ $base =~ ^[0-9]+$ ]] || die "RMQ_PORT_BASE must be a number, got $base"

node_name() { echo "wq$1@localhost"; }
amqp_port() { echo $((base + $1)); }
port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# node_env I: the environment rabbitmq-server and rabbitmqctl need for node I.
node_env() {
  local i=$1 d=$dir/wq$1
  export RABBITMQ_NODENAME=$(node_name "$i")
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$(amqp_port "$i")
  export RABBITMQ_DIST_PORT=$((base + i + 20000))
  export RABBITMQ_MNESIA_BASE=$d/mnesia
  export RABBITMQ_LOG_BASE=$d/log
  export RABBITMQ_PID_FILE=$d/rabbit.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$d/rabbitmq
}
ctl() { local i=$1; shift; (node_env "$i"; rabbitmqctl -q -n "$(node_name "$i")" "$@"); }
pid_of() { tr -dc 0-9 2>/dev/null <"$dir/wq$1/rabbit.pid" || true; }
alive() { local p; p=$(pid_of "$1"); [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

start_node() {
  local i=$1 d=$dir/wq$1
  mkdir -p "$d/mnesia" "$d/log"
  echo '[].' >"$d/enabled_plugins"
  printf 'loopback_users.guest = true\nlisteners.tcp.default = 127.0.0.1:%s\n' "$(amqp_port "$i")" >"$d/rabbitmq.conf"
  id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq:rabbitmq "$dir"
  rm -f "$d/rabbit.pid"
  # RabbitMQ sizes its connection limit from the file-descriptor limit it starts with.
  (node_env "$i"; ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; nohup rabbitmq-server >>"$d/server.out" 2>&1 &)
  for _ in $(seq 1 240); do
    if port_answers "$(amqp_port "$i")" && [[ -n $(pid_of "$i") ]]; then return 0; fi
    sleep 0.5
  done
  tail -20 "$d/server.out" >&2 || true
  die "node $i did not start; see $d/server.out and $d/log"
}

cmd=${1:-}
case $cmd in
up)
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"
  [[ -e $dir ]] && die "$dir exists: a cluster is up or was not cleaned (rabbitmq-cluster.sh down first)"
  for ((i = 1; i <= size; i++)); do
    for p in "$(amqp_port "$i")" $((base + i + 20000)); do
      port_answers "$p" && die "something already listens on 127.0.0.1:$p; pick another RMQ_PORT_BASE"
    done
  done
  if [[ $(id -u) -ne 0 && ! -e $HOME/.erlang.cookie ]]; then
    (umask 077; head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HOME/.erlang.cookie")
  fi
  mkdir -p "$dir"
  for ((i = 1; i <= size; i++)); do start_node "$i"; done
  for ((i = 2; i <= size; i++)); do
    ctl "$i" stop_app
    ctl "$i" join_cluster "$(node_name 1)"
    ctl "$i" start_app
  done
  ctl 1 await_startup
  running=$(ctl 1 eval 'length(rabbit_nodes:all_running()).')
  [[ $running == "$size" ]] || die "only $running of $size nodes are running in the cluster"
  echo "rabbitmq-cluster.sh: $size nodes up; AMQP on 127.0.0.1:$(amqp_port 1)..$(amqp_port "$size")"
  ;;
down)
  [[ -e $dir ]] || exit 0
  for ((i = 1; i <= size; i++)); do alive "$i" && ctl "$i" stop >/dev/null 2>&1 || true; done
  for ((i = 1; i <= size; i++)); do
    p=$(pid_of "$i")
    [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
  ;;
kill)
  i=${2:?kill takes a node number}
  alive "$i" || die "node $i is not running"
  kill -KILL "$(pid_of "$i")"
  ;;
start)
  i=${2:?start takes a node number}
  alive "$i" && die "node $i is already running"
  start_node "$i"
  ctl "$i" await_startup
  ;;
pid)
  i=${2:?pid takes a node number}
  alive "$i" || die "node $i is not running"
  pid_of "$i"
  ;;
leader)
  q=${2:?leader takes a queue name}
  for ((i = 1; i <= size; i++)); do
    alive "$i" || continue
    l=$(ctl "$i" list_queues name leader --no-table-headers | awk -v q="$q" '$1 == q { print $2 }')
    [[ -n $l ]] || die "no queue $q (or no leader) on node $i"
    [[ $l =~ ^wq([0-9]+)@ ]] || die "unexpected leader $l"
    echo "${BASH_REMATCH[1]}"
    exit 0
  done
  die "no node is running"
  ;;
*) echo "usage: scripts/rabbitmq-cluster.sh up | down | kill I | start I | pid I | leader QUEUE" >&2; exit 2 ;;
esac
