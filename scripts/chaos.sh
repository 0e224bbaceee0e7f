#!/usr/bin/env bash
# Warren's chaos suite: a 3-node cluster under a seeded nemesis while real clients work on it.
#   scripts/chaos.sh [--duration SECONDS] [--docker] [--seed N]
# Brings a cluster up (local processes through scripts/cluster.sh, with its own CLUSTER_DIR under
# a temp dir; containers through scripts/docker-cluster.sh with --docker), runs cmd/chaos against
# it for --duration seconds (default 60) with fault schedule --seed (default 1), and always tears
# the cluster down. The last line is cmd/chaos's verdict line:
#   chaos: duration=Ns kills=K pauses=P partitions=Q wipes=X fault_errors=E sent=S confirmed=C
#          received=R lost=L unexpected=U duplicated=D returned_stable=B rpc_ok=A rpc_timeout=T
#          rpc_wrong=W digest=equal|DIFFERENT confirmed_classic=N confirmed_quorum=N
#          lost_classic=N lost_quorum=N lost_wiped_classic=N availability=P% availability_classic=P%
#          availability_quorum=P% availability_quorum_kill=P%
# (one line; availability = share of publishes confirmed while a fault was in force). Exit 0 only if the run passed; on failure the end of every node's log is printed
# (to stderr) before the report. Uses AMQP 127.0.0.1:5672..5674 and HTTP 127.0.0.1:15672..15674,
# which must be free; in process mode $PORT_OFFSET (as scripts/cluster.sh reads it) shifts every
# port, so a chaos run can go beside another cluster. With $CHAOS_KEEP_LOGS set to a directory,
# every node's full log is copied there (n1.log..n3.log) before the teardown.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

die() { echo "chaos.sh: $*" >&2; exit 2; }
usage() { echo "usage: scripts/chaos.sh [--duration SECONDS] [--docker] [--seed N]" >&2; exit 2; }

duration=60 seed=1 docker=0
while (($#)); do
  case $1 in
  --duration) [[ $# -ge 2 ]] || usage; duration=$2; shift 2 ;;
  --duration=*) duration=${1#*=}; shift ;;
  --seed) [[ $# -ge 2 ]] || usage; seed=$2; shift 2 ;;
  --seed=*) seed=${1#*=}; shift ;;
  --docker) docker=1; shift ;;
  -h | --help) usage ;;
  *) echo "chaos.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "--duration takes a whole number of seconds, got '$duration'"
[[ $seed =~ ^[0-9]+$ ]] || die "--seed takes a non-negative integer, got '$seed'"

off=${PORT_OFFSET:-0}
[[ $off =~ ^[0-9]+$ ]] || die "PORT_OFFSET must be a number, got '$off'"
((docker && off != 0)) && die "PORT_OFFSET applies to process mode only (docker-cluster.sh publishes fixed ports)"
amqp_base=$((5672 + off)) http_base=$((15672 + off))
for port in $amqp_base $((amqp_base + 1)) $((amqp_base + 2)) $http_base $((http_base + 1)) $((http_base + 2)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (another cluster up?); the chaos cluster needs AMQP $amqp_base..$((amqp_base + 2)) and HTTP $http_base..$((http_base + 2))"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/warren-chaos.XXXXXX")
if ((docker)); then
  cluster=(bash scripts/docker-cluster.sh)
  mode_flags=(--docker --script scripts/docker-cluster.sh)
else
  export CLUSTER_DIR=$work/cluster
  cluster=(bash scripts/cluster.sh)
  mode_flags=(--script scripts/cluster.sh)
fi

keep_logs() {
  local i c keep=${CHAOS_KEEP_LOGS:-}
  [[ -n $keep ]] || return 0
  mkdir -p "$keep" || return 0
  for i in 1 2 3; do
    if ((docker)); then
      c=$(docker ps -aq --filter label=com.docker.compose.project=warren --filter "label=com.docker.compose.service=n$i" | head -n1)
      [[ -n $c ]] && docker logs "$c" >"$keep/n$i.log" 2>&1
    else
      [[ -f $CLUSTER_DIR/n$i/node.log ]] && cp "$CLUSTER_DIR/n$i/node.log" "$keep/n$i.log"
    fi
  done
  echo "chaos.sh: node logs kept in $keep" >&2
}

teardown() {
  keep_logs || true
  "${cluster[@]}" down >/dev/null 2>&1 || echo "chaos.sh: tearing the cluster down failed" >&2
  rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT TERM # until cmd/chaos runs; then it is told to cut the run short instead

node_logs() {
  local i c
  for i in 1 2 3; do
    if ((docker)); then
      c=$(docker ps -aq --filter label=com.docker.compose.project=warren --filter "label=com.docker.compose.service=n$i" | head -n1)
      [[ -n $c ]] || continue
      echo "==== node n$i (container $c), last 60 lines" >&2
      docker logs --tail 60 "$c" >&2 2>&1 || true
    else
      [[ -f $CLUSTER_DIR/n$i/node.log ]] || continue
      echo "==== node n$i ($CLUSTER_DIR/n$i/node.log), last 60 lines" >&2
      tail -n 60 "$CLUSTER_DIR/n$i/node.log" >&2
    fi
  done
}

go build -o "$work/chaos" ./cmd/chaos || die "building cmd/chaos failed"
if ! "${cluster[@]}" up 3 >&2; then
  node_logs
  die "the cluster did not come up"
fi

# cmd/chaos logs to stderr as it goes and writes its report (nemesis timeline, checker lines,
# verdict line) to stdout at the end; holding that back until the node logs are printed keeps
# the verdict line last.
# Interrupted, cmd/chaos still heals the cluster and reports (and exits 2): pass the signal on
# and wait for it.
"$work/chaos" --duration "$duration" --seed "$seed" --amqp-port "$amqp_base" --http-port "$http_base" \
  "${mode_flags[@]}" >"$work/out" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
while :; do
  rc=0
  wait "$pid" || rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
trap - INT TERM
((rc == 0)) || node_logs
cat "$work/out"
exit "$rc"
