#!/usr/bin/env bash
# A local multi-process Warren cluster on this machine.
#   scripts/cluster.sh up [N]    start N nodes (default 3), return once all are alive members
#                                and a Raft leader is elected
#   scripts/cluster.sh down      stop every node and remove the cluster's state
#   scripts/cluster.sh kill I    SIGKILL node I
#   scripts/cluster.sh start I   restart node I on its data (rejoins through the other nodes)
#   scripts/cluster.sh leave I   graceful leave of node I (`node leave`: hands its queues over, exits)
#   scripts/cluster.sh pause I   SIGSTOP node I (a hung process: alive socket, no answers)
#   scripts/cluster.sh unpause I SIGCONT node I
#   scripts/cluster.sh wipe I    destroy node I for good: SIGKILL it, delete its data dir and
#                                `node forget` it through a live node (retried until accepted);
#                                `start I` then starts a fresh, empty node with the same id and
#                                ports, which joins as a new member
#   scripts/cluster.sh status    node status of the cluster (through the first live node)
# Node i listens for AMQP on 5671+i and HTTP on 15671+i (node 1: 5672 and 15672); Raft on
# 7100+i, gossip on 7200+i, forwarded writes on 7300+i, data links on 7400+i. State lives under $CLUSTER_DIR
# (default .cluster/); the cluster secret is $WARREN_CLUSTER_SECRET (default: one made at `up`).
# $PORT_OFFSET (default 0) shifts every port, so a second cluster can run beside the first.
# WARREN_TLS=1 at `up` also writes a throw-away CA and certificates (`node certs`) to
# $CLUSTER_DIR/certs and gives node i amqps on 5690+i and https on 15690+i (clients trust
# certs/ca.pem; certs/client-guest.pem logs in with EXTERNAL); node links use mutual TLS. `scripts/cluster.sh reload I`
# sends node I SIGHUP to re-read its certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CLUSTER_DIR:-.cluster}
bin=bin/warren

die() { echo "cluster.sh: $*" >&2; exit 1; }
off=${PORT_OFFSET:-0}
[[ $off =~ ^[0-9]+$ ]] || die "PORT_OFFSET must be a number, got $off"
amqp_port() { echo $((5671 + off + $1)); }
http_addr() { echo "127.0.0.1:$((15671 + off + $1))"; }
gossip_addr() { echo "127.0.0.1:$((7200 + off + $1))"; }
count() { cat "$dir/size" 2>/dev/null || echo 0; }
pid_of() { cat "$dir/n$1/pid" 2>/dev/null || true; }
# A killed node nobody reaped yet is a zombie: kill -0 still succeeds on it, so check its state.
pid_alive() {
  local st
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 1
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}
alive() { pid_alive "$(pid_of "$1")"; }

start_node() {
  local i=$1 join=""
  for ((j = 1; j <= $(count); j++)); do
    [[ $j -ne $i ]] && join+="${join:+,}$(gossip_addr "$j")"
  done
  # The first node of a new cluster bootstraps it (only at `up`); every other start, a fresh
  # node 1 after a wipe included, joins the others.
  if [[ ${bootstrap:-0} -eq 1 && $i -eq 1 ]]; then join=""; fi
  mkdir -p "$dir/n$i"
  local tls=()
  if [[ -e $dir/certs/ca.pem ]]; then
    tls=(--amqps-addr "127.0.0.1:$((5690 + off + i))" --https-addr "127.0.0.1:$((15690 + off + i))"
      --tls-cert "$dir/certs/n$i.pem" --tls-key "$dir/certs/n$i-key.pem" --tls-ca "$dir/certs/ca.pem"
      --cluster-tls-cert "$dir/certs/n$i.pem" --cluster-tls-key "$dir/certs/n$i-key.pem" --cluster-tls-ca "$dir/certs/ca.pem")
  fi
  WARREN_CLUSTER_SECRET=$(cat "$dir/secret") "$bin" run --id "n$i" --data-dir "$dir/n$i/data" "${tls[@]}" \
    --amqp-addr "127.0.0.1:$(amqp_port "$i")" --http-addr "$(http_addr "$i")" \
    --raft-addr "127.0.0.1:$((7100 + off + i))" --gossip-addr "$(gossip_addr "$i")" \
    --forward-addr "127.0.0.1:$((7300 + off + i))" --data-addr "127.0.0.1:$((7400 + off + i))" --join "$join" --log-level "${WARREN_LOG_LEVEL:-warn}" \
    >>"$dir/n$i/node.log" 2>&1 &
  echo $! >"$dir/n$i/pid"
}

# check_started dies naming a node started by this command whose process has exited (a port
# taken by something else, a bad data dir): its log's last lines say why.
check_started() {
  local i
  for i in "$@"; do
    alive "$i" && continue
    echo "cluster.sh: node $i exited during start-up; last lines of $dir/n$i/node.log:" >&2
    tail -n 5 "$dir/n$i/node.log" >&2
    echo "cluster.sh: the other nodes are left running; scripts/cluster.sh down stops them" >&2
    exit 1
  done
}

# is_self succeeds when the node API at node i's HTTP address is node i itself (not some other
# process answering on that port).
is_self() {
  local out
  out=$("$bin" status --http "$(http_addr "$1")" --json 2>/dev/null) || return 1
  /usr/bin/python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
sys.exit(0 if d["overview"].get("node") == sys.argv[1] else 1)' "n$1" <<<"$out"
}

# wait_members WANT NODE...: wait until WANT nodes are running members with a leader, each of
# the NODEs answers as itself, and none of them has exited.
wait_members() {
  local want=$1 deadline=$((SECONDS + 60)) out ok
  shift
  while ((SECONDS < deadline)); do
    check_started "$@"
    ok=1
    for i in "$@"; do is_self "$i" || { ok=0; break; }; done
    if ((ok)); then
      for ((i = 1; i <= $(count); i++)); do
        alive "$i" || continue
        out=$("$bin" status --http "$(http_addr "$i")" --json 2>/dev/null) || continue
        if /usr/bin/python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
alive = sum(1 for n in d["nodes"] if n.get("running"))
sys.exit(0 if alive >= int(sys.argv[1]) and d["overview"].get("leader") else 1)' "$want" <<<"$out"; then
          return 0
        fi
      done
    fi
    sleep 0.3
  done
  for i in "$@"; do
    is_self "$i" || { echo "cluster.sh: node $i does not answer as n$i on $(http_addr "$i"); see $dir/n$i/node.log" >&2; return 1; }
  done
  return 1
}

cmd=${1:-}
case $cmd in
up)
  n=${2:-3}
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "up takes a node count, got $n"
  [[ $(count) -eq 0 ]] || die "a cluster is already up in $dir (scripts/cluster.sh down first)"
  go build -o "$bin" ./cmd/node
  mkdir -p "$dir"
  echo "$n" >"$dir/size"
  echo "${WARREN_CLUSTER_SECRET:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}" >"$dir/secret"
  if [[ ${WARREN_TLS:-} == 1 ]]; then
    nodes=n1; for ((i = 2; i <= n; i++)); do nodes+=",n$i"; done
    "$bin" certs --dir "$dir/certs" --nodes "$nodes" --clients guest >/dev/null
  fi
  bootstrap=1 start_node 1
  wait_members 1 1 || die "node 1 did not come up; see $dir/n1/node.log"
  for ((i = 2; i <= n; i++)); do start_node "$i"; done
  wait_members "$n" $(seq 1 "$n") || die "the cluster did not form; see $dir/n*/node.log"
  echo "cluster.sh: $n nodes up; AMQP on 127.0.0.1:$(amqp_port 1)..$(amqp_port "$n")"
  if [[ -e $dir/certs/ca.pem ]]; then
    echo "cluster.sh: amqps on 127.0.0.1:$((5691 + off))..$((5690 + off + n)), https on 127.0.0.1:$((15691 + off))..; CA $dir/certs/ca.pem"
  fi
  ;;
down)
  for ((i = 1; i <= $(count); i++)); do
    p=$(pid_of "$i"); [[ -n $p ]] && { kill -CONT "$p"; kill -TERM "$p"; } 2>/dev/null || true
  done
  for ((i = 1; i <= $(count); i++)); do
    p=$(pid_of "$i")
    for _ in $(seq 1 50); do pid_alive "$p" || break; sleep 0.1; done
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
  ((i >= 1 && i <= $(count))) || die "no node $i in this cluster"
  alive "$i" && die "node $i is already running"
  start_node "$i"
  live=0; for ((j = 1; j <= $(count); j++)); do alive "$j" && live=$((live + 1)); done
  wait_members "$live" "$i" || die "node $i did not rejoin; see $dir/n$i/node.log"
  for _ in $(seq 1 300); do "$bin" status --http "$(http_addr "$i")" >/dev/null 2>&1 && exit 0; sleep 0.1; done
  die "node $i does not answer on $(http_addr "$i"); see $dir/n$i/node.log"
  ;;
reload)
  i=${2:?reload takes a node number}
  alive "$i" || die "node $i is not running"
  kill -HUP "$(pid_of "$i")"
  ;;
pause | unpause)
  i=${2:?$cmd takes a node number}
  alive "$i" || die "node $i is not running"
  if [[ $cmd == pause ]]; then kill -STOP "$(pid_of "$i")"; else kill -CONT "$(pid_of "$i")"; fi
  ;;
leave)
  i=${2:?leave takes a node number}
  alive "$i" || die "node $i is not running"
  "$bin" leave --http "$(http_addr "$i")" || die "node $i refused to leave"
  p=$(pid_of "$i")
  for _ in $(seq 1 600); do pid_alive "$p" || break; sleep 0.1; done
  pid_alive "$p" && die "node $i accepted the leave but is still running after 60s"
  rm -f "$dir/n$i/pid"
  ;;
wipe)
  i=${2:?wipe takes a node number}
  ((i >= 1 && i <= $(count))) || die "no node $i in this cluster"
  # A majority must survive the wipe: refuse when another node is down already.
  for ((j = 1; j <= $(count); j++)); do
    [[ $j -ne $i ]] && ! alive "$j" && die "node $j is down: wiping node $i too could cost the majority"
  done
  p=$(pid_of "$i")
  if pid_alive "$p"; then kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p"; fi
  for _ in $(seq 1 50); do pid_alive "$p" || break; sleep 0.1; done
  pid_alive "$p" && die "node $i survived SIGKILL"
  rm -rf "$dir/n$i/data" "$dir/n$i/pid"
  # Forget is refused until the survivors have declared the node dead (about a second).
  deadline=$((SECONDS + 60)) err=""
  while :; do
    for ((j = 1; j <= $(count); j++)); do
      [[ $j -ne $i ]] && alive "$j" || continue
      if err=$("$bin" forget --http "$(http_addr "$j")" "n$i" 2>&1); then
        echo "cluster.sh: node $i wiped and forgotten (through node $j)"
        exit 0
      fi
    done
    ((SECONDS < deadline)) || die "node $i is wiped but no live node accepted \`node forget n$i\` within 60s: $err"
    sleep 0.3
  done
  ;;
status)
  for ((i = 1; i <= $(count); i++)); do
    if alive "$i"; then exec "$bin" status --http "$(http_addr "$i")"; fi
  done
  die "no node is running"
  ;;
*) echo "usage: scripts/cluster.sh up [N] | down | kill I | start I | leave I | pause I | unpause I | reload I | wipe I | status" >&2; exit 2 ;;
esac
