#!/usr/bin/env bash
# Runs cmd/bench's workloads against Debian's RabbitMQ and against Warren in one run, alternating
# between the two, and prints Markdown tables of the figures and the ratio Warren/RabbitMQ. The
# machine is shared and noisy, so only the ratios from one run mean anything.
#
#   scripts/bench.sh [--duration SECONDS] [--only W1,W2] [--size BYTES]
#                    [--rabbit-only | --warren-url URL [--warren-pid PID]] [--out FILE]
#
#   --duration    measured seconds per time-based workload (default 10)
#   --only        comma-separated workloads (default: all, in the order listed below)
#   --rabbit-only bench RabbitMQ alone (no Warren is built or started)
#   --warren-url  bench an already running Warren instead of starting one; --warren-pid lets the
#                 memory workloads read its RSS
#   --out         also keep the raw JSON result lines in FILE
#
# RabbitMQ comes from scripts/rabbitmq.sh on 127.0.0.1:5682 (installed with apt-get if missing);
# it is stopped at the end only if this script started it. Warren is built to bin/warren, started
# on 127.0.0.1:5692 with a throw-away data dir, and always stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# The memory workloads run before slow-consumer: a broker freeing a large backlog gives memory
# back for tens of seconds afterwards, which would swamp their before/after deltas.
all_workloads=(1p1c 1p1c-confirm persistent persistent-4p rpc fanout declare idle-conns empty-queues slow-consumer)
duration=10
size=256
only=""
rabbit_only=false
warren_url=""
warren_pid=""
out=""

die() { echo "bench.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) [[ $# -ge 2 ]] || die "--duration needs a value"; duration=$2; shift 2 ;;
    --only) [[ $# -ge 2 ]] || die "--only needs a value"; only=$2; shift 2 ;;
    --size) [[ $# -ge 2 ]] || die "--size needs a value"; size=$2; shift 2 ;;
    --rabbit-only) rabbit_only=true; shift ;;
    --warren-url) [[ $# -ge 2 ]] || die "--warren-url needs a value"; warren_url=$2; shift 2 ;;
    --warren-pid) [[ $# -ge 2 ]] || die "--warren-pid needs a value"; warren_pid=$2; shift 2 ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a value"; out=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $duration =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--duration must be a number of seconds, got $duration"
[[ $size =~ ^[0-9]+$ ]] || die "--size must be a number of bytes, got $size"
[[ -z $warren_pid || $warren_pid =~ ^[0-9]+$ ]] || die "--warren-pid must be a process id"
$rabbit_only && [[ -n $warren_url ]] && die "--rabbit-only and --warren-url exclude each other"

workloads=("${all_workloads[@]}")
if [[ -n $only ]]; then
  IFS=, read -r -a workloads <<<"$only"
  for w in "${workloads[@]}"; do
    [[ " ${all_workloads[*]} " == *" $w "* ]] || die "unknown workload $w; known: ${all_workloads[*]}"
  done
fi

rabbit_port=${RABBIT_PORT:-5682}
rabbit_url="amqp://guest:guest@127.0.0.1:${rabbit_port}/"
rabbit_dir=${RABBIT_DIR:-/tmp/warren-rabbitmq}
warren_amqp=127.0.0.1:5692

tmp=$(mktemp -d /tmp/warren-bench.XXXXXX)
results=$tmp/results.jsonl
: >"$results"
started_rabbit=false
started_warren_pid=""

port_answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

cleanup() {
  local status=$?
  if [[ -n $started_warren_pid ]] && kill -0 "$started_warren_pid" 2>/dev/null; then
    echo "bench.sh: stopping Warren (pid $started_warren_pid)" >&2
    kill -TERM "$started_warren_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$started_warren_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$started_warren_pid" 2>/dev/null || true
  fi
  if $started_rabbit; then
    echo "bench.sh: stopping the RabbitMQ this script started" >&2
    scripts/rabbitmq.sh stop || true
  fi
  if [[ -n $out && -s $results ]]; then cp "$results" "$out"; fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench.sh: building cmd/bench" >&2
go build -o "$tmp/bench" ./cmd/bench

# --- RabbitMQ -----------------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null; then
  echo "bench.sh: installing rabbitmq-server with apt-get" >&2
  sudo_cmd=""
  [[ $(id -u) -eq 0 ]] || sudo_cmd=sudo
  $sudo_cmd apt-get install -y rabbitmq-server >&2
fi
if ! port_answers "127.0.0.1:$rabbit_port"; then
  # RabbitMQ sizes its connection limit from the file-descriptor limit it starts with; the
  # common default of 1024 caps it near 830 connections, below what idle-conns opens.
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; scripts/rabbitmq.sh start "$rabbit_port") >&2
  started_rabbit=true
else
  echo "bench.sh: using the RabbitMQ already answering on $rabbit_port" >&2
fi
rabbit_pid=""
if [[ -r $rabbit_dir/rabbit.pid ]]; then rabbit_pid=$(tr -dc 0-9 <"$rabbit_dir/rabbit.pid"); fi
if [[ -z $rabbit_pid || ! -r /proc/$rabbit_pid/status ]]; then
  # Fall back to whoever listens on the port (needs ss and permission to see the owner).
  rabbit_pid=$(ss -ltnpH "sport = :$rabbit_port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
fi
if [[ -n $rabbit_pid ]]; then
  echo "bench.sh: RabbitMQ pid $rabbit_pid (open files limit $(awk '/Max open files/ {print $4}' /proc/"$rabbit_pid"/limits 2>/dev/null || echo '?'))" >&2
else
  echo "bench.sh: cannot find RabbitMQ's pid; its memory figures will be missing" >&2
fi

# --- Warren -------------------------------------------------------------------------------------
brokers=(rabbitmq)
if ! $rabbit_only; then
  brokers+=(warren)
  if [[ -z $warren_url ]]; then
    echo "bench.sh: building Warren" >&2
    go build -o bin/warren ./cmd/node
    port_answers "$warren_amqp" && die "something already listens on $warren_amqp; pass --warren-url to bench it"
    bin/warren run --id bench --data-dir "$tmp/warren-data" --amqp-addr "$warren_amqp" \
      --http-addr 127.0.0.1:15692 --raft-addr 127.0.0.1:7092 --gossip-addr 127.0.0.1:7992 \
      >"$tmp/warren.log" 2>&1 &
    started_warren_pid=$!
    warren_pid=$started_warren_pid
    for _ in $(seq 1 150); do
      port_answers "$warren_amqp" && break
      if ! kill -0 "$warren_pid" 2>/dev/null; then
        echo "bench.sh: Warren exited during startup:" >&2; tail -20 "$tmp/warren.log" >&2; exit 1
      fi
      sleep 0.2
    done
    port_answers "$warren_amqp" || { echo "bench.sh: Warren did not listen on $warren_amqp:" >&2; tail -20 "$tmp/warren.log" >&2; exit 1; }
    warren_url="amqp://guest:guest@${warren_amqp}/"
    echo "bench.sh: Warren pid $warren_pid on $warren_amqp" >&2
  fi
fi

# warren_counter NAME: a counter from the Warren node's /metrics (empty if unavailable).
warren_metrics_addr=127.0.0.1:15692
warren_counter() {
  /usr/bin/python3 - "$warren_metrics_addr" "$1" <<'PY' 2>/dev/null || true
import sys, urllib.request
for line in urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(line.split()[1])
PY
}

# --- Workloads ----------------------------------------------------------------------------------
# bench_one LABEL URL PID WORKLOAD: appends exactly one result line, even when cmd/bench fails.
bench_one() {
  local label=$1 url=$2 pid=$3 workload=$4 before status=0
  if [[ -z $pid && ( $workload == idle-conns || $workload == empty-queues ) ]]; then
    printf '{"workload":"%s","broker":"%s","broker_url":"","duration_s":0,"error":"no broker pid to read memory from"}\n' \
      "$workload" "$label" >>"$results"
    return
  fi
  before=$(wc -l <"$results")
  local f0="" r0="" t0=$SECONDS
  if [[ $label == warren && $workload == persistent* ]]; then
    f0=$(warren_counter warren_store_fsyncs_total); r0=$(warren_counter warren_store_records_total)
  fi
  # The hard timeout backs up cmd/bench's own deadline in case a broker hangs it.
  timeout --kill-after=10 "$(awk -v d="$duration" 'BEGIN { printf "%d", d + 420 }')" \
    "$tmp/bench" -url "$url" -label "$label" -workload "$workload" -duration "${duration}s" \
    -size "$size" ${pid:+-pid "$pid"} >>"$results" 2>>"$tmp/bench.log" || status=$?
  if [[ $(wc -l <"$results") -eq $before ]]; then
    printf '{"workload":"%s","broker":"%s","broker_url":"","duration_s":0,"error":"cmd/bench exited with status %d and no result"}\n' \
      "$workload" "$label" "$status" >>"$results"
  fi
  echo "bench.sh: $(tail -1 "$results")" >&2
  if [[ -n $f0 ]]; then
    local f1 r1 secs
    f1=$(warren_counter warren_store_fsyncs_total); r1=$(warren_counter warren_store_records_total)
    secs=$((SECONDS - t0))
    [[ -n $f1 && $secs -gt 0 ]] && awk -v w="$workload" -v f="$((f1 - f0))" -v r="$((r1 - r0))" -v s="$secs" \
      'BEGIN { printf "- %s on warren: %.0f fsyncs/s, %.1f store records per fsync (publishes and acks; from /metrics over %ds incl. setup)\n", w, f / s, (f ? r / f : 0), s }' >>"$tmp/notes"
  fi
}

i=0
for workload in "${workloads[@]}"; do
  order=("${brokers[@]}")
  # Alternate who goes first, so neither broker always runs in the other's aftermath (a broker
  # still freeing a slow consumer's backlog takes CPU from the next run on this shared machine).
  if (( i % 2 == 1 )) && [[ ${#order[@]} -eq 2 ]]; then order=("${order[1]}" "${order[0]}"); fi
  for label in "${order[@]}"; do
    echo "bench.sh: $workload on $label" >&2
    if [[ $label == rabbitmq ]]; then
      bench_one rabbitmq "$rabbit_url" "$rabbit_pid" "$workload"
    else
      bench_one warren "$warren_url" "$warren_pid" "$workload"
    fi
    sleep 2
  done
  i=$((i + 1))
done

echo
echo "## Warren vs RabbitMQ ($(date -u +%Y-%m-%dT%H:%MZ), ${duration}s per workload, ${size} B messages, $(nproc) cores)"
echo
"$tmp/bench" -table "$results"
if [[ -s $tmp/notes ]]; then echo; echo "Message store:"; cat "$tmp/notes"; fi
if [[ -n $started_warren_pid ]] && ! kill -0 "$started_warren_pid" 2>/dev/null; then
  echo "bench.sh: Warren died during the run; last log lines:" >&2
  tail -20 "$tmp/warren.log" >&2
  exit 1
fi
# The tables show "error" for a failed run, never its figures; the exit status says so too.
failed=$(grep -c '"error":' "$results" || true)
if ((failed > 0)); then
  echo "bench.sh: $failed workload runs failed; their figures are withheld (see the Notes above)" >&2
  exit 1
fi
