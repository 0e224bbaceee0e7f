#!/usr/bin/env bash
# Replicated (quorum) queues, Warren 3-node vs RabbitMQ 3.10 3-node, in one run on this machine,
# alternating between the two, printed as Markdown tables with Warren/RabbitMQ ratios (none when
# either side failed). The machine is shared and noisy: only ratios from one run mean anything.
#
#   scripts/bench-quorum.sh [--duration SECONDS] [--rounds N] [--fill COUNT] [--out FILE]
#
#   --duration  measured seconds per throughput case (default 10)
#   --rounds    failover measurements per broker (default 3)
#   --fill      messages (256 B) in the memory case's replicated queue (default 1000000; 0 skips it)
#   --out       also keep the raw JSON result lines in FILE
#   scripts/bench-quorum.sh --table FILE   print the tables of a kept FILE again (nothing is run)
#
# Every case declares its queue and waits 2 s before its clients start (-after-declare), on both
# brokers, except "persistent-cold", where the clients start right after the declare (Warren used
# to stall there: confirms of messages settled before a follower's first sync never came).
#
# 1. throughput: cmd/bench persistent (1 publisher) and persistent-4p (4 publishers), each with a
#    consumer, confirms and persistent messages, into one x-queue-type=quorum queue declared on
#    node 1; clients on node 1 (the leader's node, RabbitMQ's default client-local placement);
#    256 B and 4 KiB.
# 2. failover: cmd/bench failover: queue declared on node 1, publisher with confirms on node 2;
#    after 3 s the leader's node is killed with SIGKILL; the figure is kill → first confirm of a
#    publish sent after the kill. The killed node is restarted before the next case.
# 3. memory: fill a quorum queue with --fill persistent 256 B messages through node 1 and read each
#    node's RSS (/proc VmRSS) before and after (after: once it stops moving, at most 30 s).
#
# RabbitMQ: scripts/rabbitmq-cluster.sh (AMQP 5781-5783). Warren: scripts/cluster.sh with
# PORT_OFFSET=250 (AMQP 5922-5924, HTTP 15922-15924) and its state under /tmp. Both are stopped
# at the end. `scripts/bench-quorum.sh kill-leader rabbitmq|warren NODE QUEUE` is the kill command
# the failover case runs: it kills QUEUE's leader, refusing when the leader is NODE (the one the
# publisher uses), and prints "killed UNIX_NANOS WHAT".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

warren_off=${WARREN_PORT_OFFSET:-250}
export RMQ_PORT_BASE=${RMQ_PORT_BASE:-5780}
export RMQ_CLUSTER_DIR=${RMQ_CLUSTER_DIR:-/tmp/warren-rmq-cluster}
warren_dir=${WARREN_BENCH_DIR:-/tmp/warren-bench-quorum}
wenv() { CLUSTER_DIR=$warren_dir PORT_OFFSET=$warren_off "$@"; }
warren_http() { echo "127.0.0.1:$((15671 + warren_off + $1))"; }
warren_url() { echo "amqp://guest:guest@127.0.0.1:$((5671 + warren_off + $1))/"; }
rabbit_url() { echo "amqp://guest:guest@127.0.0.1:$((RMQ_PORT_BASE + $1))/"; }
die() { echo "bench-quorum.sh: $*" >&2; exit 2; }

# warren_leader QUEUE NODE: QUEUE's leader ("n1".."n3") as node NODE's /api/queues reports it.
warren_leader() {
  /usr/bin/python3 - "$(warren_http "$2")" "$1" <<'PY'
import base64, json, sys, urllib.request
req = urllib.request.Request("http://%s/api/queues" % sys.argv[1],
                             headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
for q in json.load(urllib.request.urlopen(req, timeout=5)):
    if q["name"] == sys.argv[2]:
        print(q.get("leader") or "")
        sys.exit(0)
sys.exit("no queue %s" % sys.argv[2])
PY
}

if [[ ${1:-} == kill-leader ]]; then
  broker=${2:?kill-leader needs rabbitmq or warren}; via=${3:?kill-leader needs the publisher node}; q=${4:?kill-leader needs a queue}
  case $broker in
  rabbitmq)
    n=$(scripts/rabbitmq-cluster.sh leader "$q")
    pid=$(scripts/rabbitmq-cluster.sh pid "$n") ;;
  warren)
    l=$(warren_leader "$q" "$via")
    [[ $l =~ ^n([0-9]+)$ ]] || die "queue $q has leader '$l'"
    n=${BASH_REMATCH[1]}
    pid=$(cat "$warren_dir/n$n/pid") ;;
  *) die "kill-leader: unknown broker $broker" ;;
  esac
  [[ $n != "$via" ]] || die "the leader of $q is on node $via, the publisher's node"
  t=$EPOCHREALTIME
  kill -KILL "$pid"
  echo "killed ${t/[.,]/}000 node $n (pid $pid)"
  echo "$n" >"${KILLED_FILE:-/dev/null}"
  exit 0
fi

# print_tables RESULTS: the Markdown tables of a run's JSON result lines.
print_tables() {
/usr/bin/python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def get(broker, workload, **kw):
    return [r for r in rows if r["broker"] == broker and r["workload"] == workload
            and all(r.get(k) == v for k, v in kw.items())]
def fig(r, key):
    if r is None: return "not run"
    if r.get("error"): return "failed"
    if stalled(r): return "stalled: no confirm (%d published)" % r["published"]
    v = r.get(key)
    return "–" if v is None else ("%g" % v)
def ratio(a, b, key):
    if not a or not b or a.get("error") or b.get("error") or stalled(a) or stalled(b) or not a.get(key) or b.get(key) is None:
        return "–"
    return "%.2f" % (b[key] / a[key])
def one(lst): return lst[-1] if lst else None
def stalled(r):
    # A confirm workload that published but saw no confirm in its whole window made no progress:
    # its msgs/s only counts deliveries of what it sent before it stalled.
    return (r is not None and r["workload"].startswith("persistent") and not r.get("error") and r.get("published")
            and "nacked" in r and r.get("confirm_p50_us") is None)

print("### Confirmed persistent publishes into a quorum queue (publish + consume, clients on the leader's node)\n")
print("| workload | size | RabbitMQ msgs/s | Warren msgs/s | ratio | RabbitMQ confirm p50 / p99 µs | Warren confirm p50 / p99 µs |")
print("|---|---:|---:|---:|---:|---:|---:|")
for w, name in (("persistent", "1 publisher"), ("persistent-4p", "4 publishers"), ("persistent-cold", "1 publisher, clients right after the declare")):
    for size in ((256,) if w == "persistent-cold" else (256, 4096)):
        a, b = one(get("rabbitmq", w, size_bytes=size)), one(get("warren", w, size_bytes=size))
        if a is None and b is None:
            a, b = one([r for r in get("rabbitmq", w) if "size_bytes" not in r]), one([r for r in get("warren", w) if "size_bytes" not in r])
        lat = lambda r: "%s / %s" % (fig(r, "confirm_p50_us"), fig(r, "confirm_p99_us")) if r and not r.get("error") and not stalled(r) else "–"
        print("| %s | %d B | %s | %s | %s | %s | %s |" % (name, size, fig(a, "msgs_per_sec"), fig(b, "msgs_per_sec"),
              ratio(a, b, "msgs_per_sec"), lat(a), lat(b)))

fo = {b: get(b, "failover") for b in ("rabbitmq", "warren")}
if fo["rabbitmq"] or fo["warren"]:
    print("\n### Failover: kill -9 of the leader's node → first confirm of a publish sent after it (publisher on a live node)\n")
    print("| round | RabbitMQ ms | Warren ms | RabbitMQ nacked | Warren nacked |")
    print("|---|---:|---:|---:|---:|")
    for i in range(max(len(fo["rabbitmq"]), len(fo["warren"]))):
        rs = [fo[b][i] if i < len(fo[b]) else None for b in ("rabbitmq", "warren")]
        cells = [fig(r, "failover_ms") for r in rs] + [fig(r, "nacked") for r in rs]
        print("| %d | %s | %s | %s | %s |" % (i + 1, *cells))
    med = {}
    for b in fo:
        ok = [r["failover_ms"] for r in fo[b] if not r.get("error") and r.get("failover_ms") is not None]
        # A median over rounds where some failed would hide the failures: none is printed then.
        med[b] = statistics.median(ok) if ok and len(ok) == len(fo[b]) else None
    cell = lambda v: "–" if v is None else "%g" % v
    rat = "%.2f" % (med["warren"] / med["rabbitmq"]) if med["rabbitmq"] and med["warren"] is not None else "–"
    print("| median | %s | %s | | |" % (cell(med["rabbitmq"]), cell(med["warren"])))
    print("\nratio of the medians (Warren / RabbitMQ, below 1 is better): %s" % rat)

mem = {b: {r["node"]: r for r in get(b, "memory")} for b in ("rabbitmq", "warren")}
fills = {b: one(get(b, "fill")) for b in ("rabbitmq", "warren")}
if mem["rabbitmq"] or mem["warren"]:
    n = next(iter((mem["rabbitmq"] or mem["warren"]).values()))["messages"]
    print("\n### Memory of a %d-message (256 B) quorum queue, RSS per node (MB, before → after the fill)\n" % n)
    print("| node | RabbitMQ | Warren | ratio (after) |")
    print("|---|---:|---:|---:|")
    ok = {b: fills[b] is not None and not fills[b].get("error") for b in fills}
    for node in (1, 2, 3):
        cells, after = [], {}
        for b in ("rabbitmq", "warren"):
            r = mem[b].get(node)
            if r is None or not ok[b]:
                cells.append("failed" if r is not None or fills[b] else "not run")
            else:
                cells.append("%g → %g" % (r["rss_before_mb"], r["rss_after_mb"]))
                after[b] = r["rss_after_mb"]
        rat = "%.2f" % (after["warren"] / after["rabbitmq"]) if len(after) == 2 and after["rabbitmq"] else "–"
        print("| %d%s | %s | %s | %s |" % (node, " (declared here)" if node == 1 else "", cells[0], cells[1], rat))
    rate = lambda r: fig(r, "msgs_per_sec") + ("" if r is None or r.get("error") else " msgs/s")
    print("\nfill rate (1 publisher, 256 unconfirmed at most): RabbitMQ %s, Warren %s" % (rate(fills["rabbitmq"]), rate(fills["warren"])))

notes = ["- %s on %s failed: %s" % (r["workload"], r["broker"], r["error"]) for r in rows if r.get("error")]
notes += ["- %s on %s: %s" % (r["workload"], r["broker"], r["note"]) for r in rows if r.get("note")]
if notes:
    print("\nNotes:\n" + "\n".join(notes))
PY
}

duration=10; rounds=3; fill=1000000; out=""; settle=2s
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) [[ $# -ge 2 ]] || die "--duration needs a value"; duration=$2; shift 2 ;;
    --rounds) [[ $# -ge 2 ]] || die "--rounds needs a value"; rounds=$2; shift 2 ;;
    --fill) [[ $# -ge 2 ]] || die "--fill needs a value"; fill=$2; shift 2 ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a value"; out=$2; shift 2 ;;
    --table) [[ $# -ge 2 ]] || die "--table needs a file"; print_tables "$2"; exit 0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $duration =~ ^[0-9]+$ && $duration -gt 0 ]] || die "--duration must be a whole number of seconds"
[[ $rounds =~ ^[0-9]+$ ]] || die "--rounds must be a number"
[[ $fill =~ ^[0-9]+$ ]] || die "--fill must be a number"

tmp=$(mktemp -d /tmp/warren-bench-quorum.XXXXXX)
results=$tmp/results.jsonl
: >"$results"
started_rabbit=false
started_warren=false
cleanup() {
  local status=$?
  $started_warren && { wenv scripts/cluster.sh down || true; }
  $started_rabbit && { scripts/rabbitmq-cluster.sh down || true; }
  if [[ -n $out && -s $results ]]; then cp "$results" "$out"; fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/bench" ./cmd/bench
echo "bench-quorum.sh: starting RabbitMQ's cluster" >&2
scripts/rabbitmq-cluster.sh up >&2
started_rabbit=true
echo "bench-quorum.sh: starting Warren's cluster" >&2
for i in 1 2 3; do
  for p in $((5671 + warren_off + i)) $((15671 + warren_off + i)) $((7100 + warren_off + i)) $((7200 + warren_off + i)) $((7300 + warren_off + i)) $((7400 + warren_off + i)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && die "something already listens on 127.0.0.1:$p (set WARREN_PORT_OFFSET)"
  done
done
wenv scripts/cluster.sh up 3 >&2
started_warren=true

# record LABEL WORKLOAD ARGS...: runs cmd/bench and appends exactly one result line.
record() {
  local label=$1 workload=$2 before status=0
  shift 2
  before=$(wc -l <"$results")
  # persistent-cold is persistent without the pause; its line is renamed so the tables tell them apart.
  timeout --kill-after=10 $((duration + 700)) "$tmp/bench" -label "$label" -workload "${workload%-cold}" -slack 60s "$@" \
    2>>"$tmp/bench.log" | sed "s/\"workload\":\"${workload%-cold}\"/\"workload\":\"$workload\"/" >>"$results" || status=$?
  if [[ $(wc -l <"$results") -eq $before ]]; then
    printf '{"workload":"%s","broker":"%s","broker_url":"","duration_s":0,"error":"cmd/bench exited with status %d and no result"}\n' \
      "$workload" "$label" "$status" >>"$results"
  fi
  echo "bench-quorum.sh: $(tail -1 "$results")" >&2
}
url_of() { if [[ $1 == rabbitmq ]]; then rabbit_url "$2"; else warren_url "$2"; fi; }
order() { if (( $1 % 2 == 0 )); then echo rabbitmq warren; else echo warren rabbitmq; fi; }

# restart_node LABEL I: brings a killed node back and waits until its cluster is whole again.
restart_node() {
  if [[ $1 == rabbitmq ]]; then scripts/rabbitmq-cluster.sh start "$2" >&2; else wenv scripts/cluster.sh start "$2" >&2; fi
}

# --- 1. throughput ------------------------------------------------------------------------------
# Clients start $settle after the declare, on both brokers, so the figures are the steady state;
# the "cold" case starts them right away, as an application would.
k=0
for size in 256 4096; do
  for workload in persistent persistent-4p; do
    for label in $(order $k); do
      echo "bench-quorum.sh: $workload ${size} B on $label" >&2
      record "$label" "$workload" -url "$(url_of "$label" 1)" -queue-type quorum -size "$size" -duration "${duration}s" -after-declare "$settle"
      sleep 2
    done
    k=$((k + 1))
  done
done
for label in $(order $k); do
  echo "bench-quorum.sh: persistent 256 B, clients right after the declare, on $label" >&2
  record "$label" persistent-cold -url "$(url_of "$label" 1)" -queue-type quorum -size 256 -duration "${duration}s"
  sleep 2
done

# --- 2. failover --------------------------------------------------------------------------------
for ((r = 0; r < rounds; r++)); do
  for label in $(order $r); do
    echo "bench-quorum.sh: failover round $((r + 1)) on $label" >&2
    rm -f "$tmp/killed"
    KILLED_FILE=$tmp/killed record "$label" failover -owner-url "$(url_of "$label" 1)" -url "$(url_of "$label" 2)" \
      -queue-type quorum -after-declare "$settle" -kill-after 3s -failover-timeout 60s -duration 3s \
      -kill-cmd "KILLED_FILE=$tmp/killed scripts/bench-quorum.sh kill-leader $label 2"
    if [[ -s $tmp/killed ]]; then restart_node "$label" "$(cat "$tmp/killed")"; fi
    sleep 2
  done
done

# --- 3. memory of a replicated queue ------------------------------------------------------------
pid_of_node() {
  if [[ $1 == rabbitmq ]]; then scripts/rabbitmq-cluster.sh pid "$2"; else cat "$warren_dir/n$2/pid"; fi
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# settled_rss_kb PID: VmRSS once two readings 2 s apart differ by under 1%, or after 30 s.
settled_rss_kb() {
  local prev cur
  prev=$(rss_kb "$1")
  for _ in $(seq 1 15); do
    sleep 2
    cur=$(rss_kb "$1")
    (( (cur > prev ? cur - prev : prev - cur) * 100 < prev )) && break
    prev=$cur
  done
  echo "$cur"
}
delete_queue() {
  /usr/bin/python3 - "$1" "$2" <<'PY' || echo "bench-quorum.sh: could not delete $2 on $1" >&2
import sys, pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
c.channel().queue_delete(sys.argv[2])
c.close()
PY
}
if (( fill > 0 )); then
  for label in rabbitmq warren; do
    echo "bench-quorum.sh: memory: $fill messages on $label" >&2
    declare -A before=()
    for i in 1 2 3; do before[$i]=$(settled_rss_kb "$(pid_of_node "$label" "$i")"); done
    record "$label" fill -url "$(url_of "$label" 1)" -queue-type quorum -count "$fill" -queue bench-quorum-fill -size 256 -after-declare "$settle" -slack 600s
    for i in 1 2 3; do
      after=$(settled_rss_kb "$(pid_of_node "$label" "$i")")
      printf '{"workload":"memory","broker":"%s","broker_url":"","duration_s":0,"node":%d,"messages":%d,"rss_before_mb":%.1f,"rss_after_mb":%.1f}\n' \
        "$label" "$i" "$fill" "$(awk -v k="${before[$i]}" 'BEGIN{print k/1024}')" "$(awk -v k="$after" 'BEGIN{print k/1024}')" >>"$results"
      echo "bench-quorum.sh: $(tail -1 "$results")" >&2
    done
    delete_queue "$(url_of "$label" 1)" bench-quorum-fill
  done
fi

# --- tables -------------------------------------------------------------------------------------
echo
echo "## Replicated queues: Warren vs RabbitMQ 3.10, 3 nodes each ($(date -u +%Y-%m-%dT%H:%MZ), ${duration}s per throughput case, $(nproc) cores)"
echo
print_tables "$results"
