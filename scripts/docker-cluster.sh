#!/usr/bin/env bash
# A 3-node Warren cluster in containers (docker-compose.cluster.yml, compose project "warren").
#   scripts/docker-cluster.sh up          build the static binary and the image, start n1..n3, return
#                                         once every node is healthy and sees 3 running members and a leader
#   scripts/docker-cluster.sh down        remove the containers, the network and the data volumes
#   scripts/docker-cluster.sh kill N      SIGKILL node N's container
#   scripts/docker-cluster.sh start N     start node N's container again (on its volume) and wait until it
#                                         is healthy and a running member again
#   scripts/docker-cluster.sh pause N     freeze node N (docker pause: sockets stay open, nothing answers)
#   scripts/docker-cluster.sh unpause N
#   scripts/docker-cluster.sh partition N cut node N off the cluster network (clients cannot reach it either)
#   scripts/docker-cluster.sh wipe N      destroy node N for good: SIGKILL it, remove its container and data
#                                         volume, and `node forget` it through a live node (retried until
#                                         accepted); `start N` then creates a fresh, empty node N (same id,
#                                         address and ports) that joins as a new member
#   scripts/docker-cluster.sh heal        reconnect every cut-off node on its own address, unpause every
#                                         paused one, and wait until the running nodes see each other
#   scripts/docker-cluster.sh status      containers, then `node status` through the first node that answers
# Node N publishes AMQP on 127.0.0.1:567(1+N) and HTTP on 127.0.0.1:1567(1+N); inside the cluster network
# it is $WARREN_NET_PREFIX.(10+N). Environment: WARREN_CLUSTER_SECRET (default: the compose file's),
# WARREN_NET_PREFIX (default 172.30.76), WARREN_WAIT (seconds to wait for the cluster, default 120).
#
# WARREN_TLS=1 (give it to every command) runs the TLS variant instead, docker-compose.cluster.tls.yml
# (compose project "warren-tls", subnet WARREN_TLS_NET_PREFIX, default 172.30.77): `up` first writes
# a throw-away CA and certificates with `node certs` to WARREN_CERTS_DIR (default bin/docker-certs,
# kept while the cluster exists, removed by `down`); node N serves only amqps on 127.0.0.1:569N and
# https on 127.0.0.1:1569N (clients trust $WARREN_CERTS_DIR/ca.pem), and the nodes speak mutual TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

project=warren
file=docker-compose.cluster.yml
image=warren:local
bin=bin/warren-static
export WARREN_NET_PREFIX=${WARREN_NET_PREFIX:-172.30.76}
prefix=$WARREN_NET_PREFIX amqp_base=5671 http_base=15671 scheme="" api_tls=()
if [[ ${WARREN_TLS:-} == 1 ]]; then
  project=warren-tls file=docker-compose.cluster.tls.yml
  export WARREN_TLS_NET_PREFIX=${WARREN_TLS_NET_PREFIX:-172.30.77}
  export WARREN_CERTS_DIR=${WARREN_CERTS_DIR:-$PWD/bin/docker-certs}
  prefix=$WARREN_TLS_NET_PREFIX amqp_base=5690 http_base=15690 scheme=https://
  api_tls=(--tls-ca "$WARREN_CERTS_DIR/ca.pem")
fi
wait_s=${WARREN_WAIT:-120}
net=${project}_cluster

die() { echo "docker-cluster.sh: $*" >&2; exit 1; }
note() { echo "docker-cluster.sh: $*" >&2; }

[[ $prefix =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ||
  die "the network prefix must be three octets like 172.30.76, got '$prefix'"
[[ $wait_s =~ ^[1-9][0-9]*$ ]] || die "WARREN_WAIT must be a number of seconds, got '$wait_s'"

compose() { docker-compose -p "$project" -f "$file" "$@"; }
ip_of() { echo "$prefix.$((10 + $1))"; }
http_of() { echo "${scheme}127.0.0.1:$((http_base + $1))"; }
check_n() { [[ ${1:-} =~ ^[123]$ ]] || die "$2 takes a node number 1, 2 or 3, got '${1:-}'"; }

# cid N: node N's container id (empty when it does not exist); found by compose's labels so a
# container recreated by `up` is still found.
cid() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=n$1" | head -n1
}
need_cid() {
  local c; c=$(cid "$1")
  [[ -n $c ]] || die "node $1 has no container (scripts/docker-cluster.sh up first)"
  echo "$c"
}
state() { docker inspect -f '{{.State.Status}}' "$1" 2>/dev/null || echo missing; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1" 2>/dev/null || echo missing; }
on_net() { docker inspect -f "{{if index .NetworkSettings.Networks \"$net\"}}yes{{end}}" "$1" 2>/dev/null | grep -q yes; }

# view N: what node N says through its published HTTP port, as "LEADER RUNNING" where RUNNING is
# the comma-separated running members ("-" for none); fails when the node does not answer.
view() {
  local out
  out=$("$bin" status --http "$(http_of "$1")" "${api_tls[@]}" --json 2>/dev/null) || return 1
  /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
up = sorted(n["name"] for n in d.get("nodes") or [] if n.get("running"))
print(d.get("overview", {}).get("leader") or "-", ",".join(up) or "-")' <<<"$out"
}

# fail_if_exited N: a node that crashed at start will never turn healthy: say so now, with the
# end of its log, instead of waiting out the deadline.
fail_if_exited() {
  local c s; c=$(cid "$1")
  s=$(state "$c")
  if [[ $s == exited || $s == dead || $s == missing ]]; then
    [[ $s != missing ]] && docker logs --tail 15 "$c" >&2 2>&1 || true
    die "node $1 is $s (log above)"
  fi
}

# wait_for DESCRIPTION CHECK...: runs CHECK until it succeeds or WARREN_WAIT seconds pass.
wait_for() {
  local what=$1 start=$SECONDS
  shift
  until "$@"; do
    ((SECONDS - start < wait_s)) || return 1
    sleep 1
  done
  note "$what after $((SECONDS - start))s"
}

# all_formed: every node is healthy and sees n1, n2 and n3 running and a leader.
all_formed() {
  local i v
  for i in 1 2 3; do fail_if_exited "$i"; done
  for i in 1 2 3; do
    [[ $(health "$(cid "$i")") == healthy ]] || return 1
    v=$(view "$i") || return 1
    [[ ${v% *} != - && ${v#* } == n1,n2,n3 ]] || return 1
  done
}

# member_again N: node N is healthy, knows a leader and sees itself running, and every other node
# that answers (a killed, paused or cut-off one does not) sees N running too.
member_again() {
  local i=$1 j v
  fail_if_exited "$i"
  [[ $(health "$(cid "$i")") == healthy ]] || return 1
  v=$(view "$i") || return 1
  [[ ${v% *} != - && ,${v#* }, == *,n$i,* ]] || return 1
  for j in 1 2 3; do
    [[ $j == "$i" ]] && continue
    v=$(view "$j") || continue
    [[ ,${v#* }, == *,n$i,* ]] || return 1
  done
}

# healed: every node whose container runs sees every other such node running, and a leader.
healed() {
  local i v want=""
  for i in 1 2 3; do
    [[ $(state "$(cid "$i")") == running ]] && want+="${want:+,}n$i"
  done
  [[ -n $want ]] || return 0
  for i in 1 2 3; do
    [[ ,$want, == *,n$i,* ]] || continue
    v=$(view "$i") || return 1
    [[ ${v% *} != - ]] || return 1
    # The running set may hold more than $want (a killed node not yet declared dead); the
    # point is that the healed ones see each other again.
    local m
    for m in ${want//,/ }; do [[ ,${v#* }, == *,$m,* ]] || return 1; done
  done
}

connect() { # connect N: put node N back on the cluster network at its own address
  local c; c=$(need_cid "$1")
  on_net "$c" && return 0
  docker network connect --ip "$(ip_of "$1")" "$net" "$c" >/dev/null ||
    die "cannot reconnect node $1 to $net at $(ip_of "$1")"
  note "node $1 reconnected at $(ip_of "$1")"
}

cmd=${1:-}
case $cmd in
up)
  t0=$SECONDS
  # compose would fail half-way (some containers started) on a published port held by someone
  # else; say which port instead. With our containers already there, the ports are ours.
  if [[ -z $(docker ps -aq --filter "label=com.docker.compose.project=$project") ]]; then
    for p in $((amqp_base + 1)) $((amqp_base + 2)) $((amqp_base + 3)) $((http_base + 1)) $((http_base + 2)) $((http_base + 3)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "127.0.0.1:$p is already in use by another process; free it before up"
      fi
    done
  fi
  scripts/build-static.sh >&2 || die "building the static binary failed"
  t1=$SECONDS
  # The engine here may lack buildx; the legacy builder needs nothing but the daemon.
  docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
  docker build -q -t "$image" . >/dev/null || die "docker build of $image failed"
  # The previous warren:local, untagged by this build, would pile up at 12 MB a build.
  docker image prune -f --filter label=org.warrenmq.image=warren >/dev/null || true
  if [[ ${WARREN_TLS:-} == 1 && ! -e $WARREN_CERTS_DIR/ca.pem ]]; then
    # Valid for 127.0.0.1 (the published ports) and the nodes' cluster addresses, which the CLI
    # on this host calls too (`node forget` goes to the leader's address); nodes check each
    # other against the CA only.
    "$bin" certs --dir "$WARREN_CERTS_DIR" --nodes n1,n2,n3 --clients guest \
      --hosts "127.0.0.1,::1,localhost,$(ip_of 1),$(ip_of 2),$(ip_of 3)" >/dev/null ||
      die "node certs into $WARREN_CERTS_DIR failed"
  fi
  t2=$SECONDS
  compose up -d >&2 || die "docker-compose up failed; see: docker-compose -p $project -f $file logs"
  t3=$SECONDS
  wait_for "cluster formed" all_formed ||
    die "the cluster did not form within ${wait_s}s; see: docker-compose -p $project -f $file logs"
  note "up: static build $((t1 - t0))s, image $((t2 - t1))s, containers $((t3 - t2))s, formed $((SECONDS - t3))s; total $((SECONDS - t0))s"
  if [[ ${WARREN_TLS:-} == 1 ]]; then
    note "3 nodes up: amqps on 127.0.0.1:5691..5693, https on 127.0.0.1:15691..15693; CA $WARREN_CERTS_DIR/ca.pem"
  else
    note "3 nodes up: AMQP on 127.0.0.1:5672..5674, HTTP on 127.0.0.1:15672..15674"
  fi
  ;;
down)
  # A frozen container cannot be stopped; thaw every paused one first.
  for i in 1 2 3; do
    c=$(cid "$i")
    [[ -n $c && $(state "$c") == paused ]] && docker unpause "$c" >/dev/null
  done
  # The volumes go too, so a node's clean shutdown buys nothing: 5s, not the 15s grace.
  compose down -v --remove-orphans -t 5 >&2 || die "docker-compose down failed"
  if [[ ${WARREN_TLS:-} == 1 ]]; then rm -rf "$WARREN_CERTS_DIR"; fi
  ;;
kill)
  check_n "${2:-}" kill
  c=$(need_cid "$2")
  [[ $(state "$c") == running || $(state "$c") == paused ]] || die "node $2 is not running ($(state "$c"))"
  docker kill "$c" >/dev/null || die "docker kill of node $2 failed"
  note "node $2 killed"
  ;;
start)
  check_n "${2:-}" start
  c=$(cid "$2")
  if [[ -z $c ]]; then
    # Wiped: a fresh container on a fresh volume. n1 must join, not bootstrap a second
    # cluster as the compose file has it do on an empty volume.
    override=$(mktemp "${TMPDIR:-/tmp}/warren-wipe.XXXXXX.yml")
    printf 'version: "2.4"\nservices:\n  n%s:\n    environment:\n      WARREN_BOOTSTRAP: "false"\n' "$2" >"$override"
    docker-compose -p "$project" -f "$file" -f "$override" up -d --no-deps "n$2" >&2 ||
      { rm -f "$override"; die "docker-compose up of a fresh node $2 failed"; }
    rm -f "$override"
    c=$(need_cid "$2")
  else
    [[ $(state "$c") == running || $(state "$c") == paused ]] && die "node $2 is already running"
    connect "$2" # a node cut off before it was killed would otherwise start without a network
    docker start "$c" >/dev/null || die "docker start of node $2 failed"
  fi
  wait_for "node $2 is a member again" member_again "$2" ||
    die "node $2 did not rejoin within ${wait_s}s; see: docker logs $c"
  ;;
pause | unpause)
  check_n "${2:-}" "$cmd"
  c=$(need_cid "$2")
  want=running; [[ $cmd == unpause ]] && want=paused
  [[ $(state "$c") == "$want" ]] || die "cannot $cmd node $2: it is $(state "$c")"
  docker "$cmd" "$c" >/dev/null || die "docker $cmd of node $2 failed"
  note "node $2 ${cmd}d"
  ;;
partition)
  check_n "${2:-}" partition
  c=$(need_cid "$2")
  on_net "$c" || die "node $2 is already cut off from $net"
  docker network disconnect "$net" "$c" || die "cannot disconnect node $2 from $net"
  note "node $2 cut off from $net"
  ;;
wipe)
  check_n "${2:-}" wipe
  c=$(need_cid "$2")
  # A majority must survive the wipe: refuse when another node is down already.
  for j in 1 2 3; do
    [[ $j == "$2" ]] && continue
    [[ $(state "$(cid "$j")") == running ]] || die "node $j is not running: wiping node $2 too could cost the majority"
  done
  [[ $(state "$c") == paused ]] && docker unpause "$c" >/dev/null
  [[ $(state "$c") == running ]] && { docker kill "$c" >/dev/null || die "docker kill of node $2 failed"; }
  docker rm -f "$c" >/dev/null || die "cannot remove node $2's container"
  docker volume rm "${project}_n$2-data" >/dev/null || die "cannot remove node $2's volume ${project}_n$2-data"
  # Forget is refused until the survivors have declared the node dead (about a second).
  deadline=$((SECONDS + 60)) err=""
  while :; do
    for j in 1 2 3; do
      [[ $j == "$2" ]] && continue
      if err=$("$bin" forget --http "$(http_of "$j")" "${api_tls[@]}" "n$2" 2>&1); then
        note "node $2 wiped (container and volume removed) and forgotten through node $j"
        exit 0
      fi
    done
    ((SECONDS < deadline)) || die "node $2 is wiped but no live node accepted \`node forget n$2\` within 60s: $err"
    sleep 0.5
  done
  ;;
heal)
  for i in 1 2 3; do
    c=$(cid "$i")
    [[ -n $c ]] || continue
    if [[ $(state "$c") == paused ]]; then
      docker unpause "$c" >/dev/null || die "docker unpause of node $i failed"
      note "node $i unpaused"
    fi
    connect "$i"
  done
  wait_for "running nodes see each other" healed ||
    die "the running nodes did not see each other within ${wait_s}s; scripts/docker-cluster.sh status"
  ;;
status)
  [[ -x $bin ]] || die "$bin is missing (scripts/docker-cluster.sh up builds it)"
  for i in 1 2 3; do
    c=$(cid "$i")
    if [[ -z $c ]]; then echo "n$i: no container"; continue; fi
    n=cut-off; on_net "$c" && n=$(ip_of "$i")
    echo "n$i: $(state "$c") $(health "$c") $n"
  done
  for i in 1 2 3; do
    if "$bin" status --http "$(http_of "$i")" "${api_tls[@]}" >/dev/null 2>&1; then
      echo "through n$i:"
      exec "$bin" status --http "$(http_of "$i")" "${api_tls[@]}"
    fi
  done
  die "no node answers on $(http_of 1)..$((http_base + 3))"
  ;;
*)
  echo "usage: scripts/docker-cluster.sh up | down | kill N | start N | pause N | unpause N | partition N | wipe N | heal | status" >&2
  exit 2
  ;;
esac
