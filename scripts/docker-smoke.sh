#!/usr/bin/env bash
# CI smoke test of the container cluster (scripts/docker-cluster.sh), with the real amqp091-go
# client (scripts/smoke) from the host through the published ports:
#   1. up: three nodes healthy, each sees three running members and a leader;
#   2. a persistent message published with a confirm through n1 into a queue declared on n1 is
#      consumed through n3; another is published through n1 into a durable queue owned by n2;
#   3. n2 is killed (SIGKILL): n1 and n3 notice, and still serve topology writes (declares) and
#      messages both ways between them;
#   4. n2 is started again on its volume: it is a running member, its durable queue still holds
#      the message published before the kill, and it serves a consume of a queue owned elsewhere;
#   5. down, always (also on failure or interrupt).
# Exit 0 when every step passed; otherwise a one-line reason, the cluster's state and the end
# of each node's log, and exit 1. Each step prints how long it took.
#
# scripts/docker-smoke.sh --tls does the same for the TLS variant (WARREN_TLS=1,
# docker-compose.cluster.tls.yml), shorter, as its node faults are the plain cluster's:
#   1. up: certificates from `node certs`, three nodes healthy over https (checked against the CA);
#   2. a persistent message published with a confirm over amqps through n1 is counted by n2's
#      https API (from n1, over https) and consumed through n3; another goes through n2 and comes back through n1, both logged in with EXTERNAL (the
#      client certificate of guest) instead of a password;
#   3. every container serves amqps on its cluster address but nothing on the plaintext AMQP and
#      HTTP ports, and the API refuses a client that does not trust the cluster's CA;
#   4. down, always (certificates removed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

cluster=scripts/docker-cluster.sh
bin=bin/warren-static
client=bin/warren-smoke
run=$(date +%s)-$$ # queue names unique to this run
tls=false project=warren api_tls=() smoke_tls=()
case ${1:-} in
--tls)
  tls=true project=warren-tls
  export WARREN_TLS=1 WARREN_CERTS_DIR=${WARREN_CERTS_DIR:-$PWD/bin/docker-certs}
  certs=$WARREN_CERTS_DIR
  api_tls=(--tls-ca "$certs/ca.pem") smoke_tls=(-ca "$certs/ca.pem")
  ;;
"") ;;
*) echo "usage: scripts/docker-smoke.sh [--tls]" >&2; exit 2 ;;
esac
if $tls; then
  url() { echo "amqps://guest:guest@127.0.0.1:$((5690 + $1))/"; }
  http() { echo "https://127.0.0.1:$((15690 + $1))"; }
else
  url() { echo "amqp://guest:guest@127.0.0.1:$((5671 + $1))/"; }
  http() { echo "127.0.0.1:$((15671 + $1))"; }
fi
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

# A leftover cluster would make the test pass or fail on someone else's state, and the final
# `down` would destroy it.
if [[ -n $(docker ps -aq --filter label=com.docker.compose.project=$project) ]]; then
  echo "docker-smoke.sh: containers of compose project $project already exist (scripts/docker-cluster.sh down first)" >&2
  exit 1
fi

began=$(now)
failed=""
finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $failed || $rc -ne 0 ]]; then
    echo "docker-smoke.sh: FAILED: ${failed:-exit status $rc}" >&2
    echo "--- cluster state" >&2
    "$cluster" status >&2 2>&1 || true
    for i in 1 2 3; do
      c=$(docker ps -aq --filter label=com.docker.compose.project=$project --filter "label=com.docker.compose.service=n$i" | head -n1)
      [[ -n $c ]] || continue
      echo "--- last log lines of n$i" >&2
      docker logs --tail 25 "$c" >&2 2>&1 || true
    done
    rc=1
  fi
  local t0; t0=$(now)
  "$cluster" down >/dev/null 2>&1 || { echo "docker-smoke.sh: docker-cluster.sh down failed" >&2; rc=1; }
  echo "docker-smoke.sh: down in $(secs "$t0" "$(now)")s; total $(secs "$began" "$(now)")s" >&2
  [[ $rc -eq 0 ]] && echo "docker-smoke.sh: PASS" >&2
  exit "$rc"
}
trap finish EXIT
trap 'failed="interrupted"; exit 130' INT TERM

# step NAME COMMAND...: runs COMMAND, prints its time, and stops the test when it fails.
step() {
  local name=$1 t0
  shift
  t0=$(now)
  if ! "$@"; then
    failed="$name"
    exit 1
  fi
  printf 'docker-smoke.sh: %-62s %6ss\n' "$name" "$(secs "$t0" "$(now)")" >&2
}

# sees I RUNNING [NOT-LEADER]: node I answers, its running members are exactly RUNNING, and it
# knows a leader (other than NOT-LEADER).
sees() {
  local out
  out=$("$bin" status --http "$(http "$1")" "${api_tls[@]}" --json 2>/dev/null) || return 1
  /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
leader = d.get("overview", {}).get("leader") or ""
up = ",".join(sorted(n["name"] for n in d.get("nodes") or [] if n.get("running")))
sys.exit(0 if leader and leader != sys.argv[2] and up == sys.argv[1] else 1)' "$2" "${3:-}" <<<"$out"
}

# eventually SECONDS COMMAND...: COMMAND succeeds within SECONDS.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

healthy() {
  local i c
  for i in 1 2 3; do
    c=$(docker ps -q --filter label=com.docker.compose.project=$project --filter "label=com.docker.compose.service=n$i")
    [[ -n $c && $(docker inspect -f '{{.State.Health.Status}}' "$c") == healthy ]] || return 1
    sees "$i" n1,n2,n3 || return 1
  done
}

smoke() { "$client" "$@" -wait 60s "${smoke_tls[@]}" >/dev/null; }

# roundtrip Q PUBLISH-NODE CONSUME-NODE BODY: a persistent message published with a confirm
# through one node is consumed, intact, through the other.
roundtrip() {
  smoke publish -url "$(url "$2")" -queue "$1" -body "$4" &&
    smoke consume -url "$(url "$3")" -queue "$1" -body "$4"
}

n2_gone() { sees 1 n1,n3 n2 && sees 3 n1,n3 n2; }

step "build the AMQP client (scripts/smoke)" go build -o "$client" ./scripts/smoke
step "docker-cluster.sh up" "$cluster" up
step "3 nodes healthy, each sees n1,n2,n3 running and a leader" healthy

if $tls; then
  # The client certificate logs in as its CN (guest); the URL carries no password.
  external=(-cert "$certs/client-guest.pem" -key "$certs/client-guest-key.pem")
  ext_url() { echo "amqps://127.0.0.1:$((5690 + $1))/"; }
  # plaintext_off: each container answers on its amqps port at its cluster address (so the
  # address is reachable from here) and refuses its plaintext AMQP and HTTP ports.
  plaintext_off() {
    local i ip
    for i in 1 2 3; do
      ip=${WARREN_TLS_NET_PREFIX:-172.30.77}.$((10 + i))
      (exec 3<>"/dev/tcp/$ip/5671") 2>/dev/null || { echo "cannot reach $ip:5671" >&2; return 1; }
      for p in 5672 15672; do
        if (exec 3<>"/dev/tcp/$ip/$p") 2>/dev/null; then echo "$ip:$p accepts a connection" >&2; return 1; fi
      done
    done
  }
  untrusted_refused() { ! "$bin" status --http "$(http 1)" >/dev/null 2>&1; }
  # depth_seen I Q N: node I's https API shows N messages in Q, a count only Q's owner has (so
  # the nodes' APIs reach each other over https).
  depth_seen() {
    /usr/bin/python3 - "$(http "$1")/api/queues/%2F/$2" "$certs/ca.pem" "$3" <<'PY'
import base64, json, ssl, sys, urllib.request
url, ca, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
auth = "Basic " + base64.b64encode(b"guest:guest").decode()
req = urllib.request.Request(url, headers={"Authorization": auth})
with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=5) as r:
    sys.exit(0 if json.load(r).get("messages") == want else 1)
PY
  }
  q=smoke.$run.tls
  step "declare $q through n1 over amqps (server verified against the CA)" smoke declare -url "$(url 1)" -queue "$q"
  step "publish persistent+confirm through n1 into $q" smoke publish -url "$(url 1)" -queue "$q" -body "t1-$run"
  step "n2's https API shows the message n1 holds" eventually 15 depth_seen 2 "$q" 1
  step "consume it through n3" smoke consume -url "$(url 3)" -queue "$q" -body "t1-$run"
  step "publish through n2 logged in with EXTERNAL (client certificate)" \
    smoke publish -url "$(ext_url 2)" -queue "$q" -body "t2-$run" "${external[@]}"
  step "consume it through n1 with EXTERNAL" smoke consume -url "$(ext_url 1)" -queue "$q" -body "t2-$run" "${external[@]}"
  step "no plaintext AMQP or HTTP listener on any node" plaintext_off
  step "the https API refuses a client without the cluster CA" untrusted_refused
  exit 0
fi

q1=smoke.$run.n1
step "declare $q1 through n1" smoke declare -url "$(url 1)" -queue "$q1"
step "publish persistent+confirm through n1 into $q1" smoke publish -url "$(url 1)" -queue "$q1" -body "m1-$run"
step "consume it through n3" smoke consume -url "$(url 3)" -queue "$q1" -body "m1-$run"

q2=smoke.$run.n2
step "declare durable $q2 through n2 (owned by n2)" smoke declare -url "$(url 2)" -queue "$q2"
step "publish persistent+confirm through n1 into $q2" smoke publish -url "$(url 1)" -queue "$q2" -body "m2-$run"

step "docker-cluster.sh kill 2" "$cluster" kill 2
step "n1 and n3 see n2 gone and a leader other than n2" eventually 60 n2_gone

q3=smoke.$run.after-kill.n1
step "declare $q3 through n1 (n2 dead)" smoke declare -url "$(url 1)" -queue "$q3"
step "publish through n3 into $q3, consume through n1" roundtrip "$q3" 3 1 "m3-$run"
q4=smoke.$run.after-kill.n3
step "declare $q4 through n3 (n2 dead)" smoke declare -url "$(url 3)" -queue "$q4"
step "publish through n1 into $q4, consume through n3" roundtrip "$q4" 1 3 "m4-$run"

step "docker-cluster.sh start 2" "$cluster" start 2
step "every node sees n1,n2,n3 running and a leader again" eventually 60 healthy
step "consume through n2 the message its durable $q2 held across the kill" \
  smoke consume -url "$(url 2)" -queue "$q2" -body "m2-$run"
q5=smoke.$run.after-start
step "declare $q5 through n3" smoke declare -url "$(url 3)" -queue "$q5"
step "publish through n1 into $q5, consume through n2" roundtrip "$q5" 1 2 "m5-$run"
