#!/usr/bin/env bash
# Runs Warren's interop tests (real pika, kombu/py-amqp and oslo.messaging clients) against a broker.
#   tests/interop/run.sh amqp://user:pass@host:port/vhost
# Every test runs in its own /usr/bin/python3 process under `timeout`, so one hung client cannot
# stall the suite. Prints one PASS/FAIL line per test, then "interop: N passed, N failed"; exits
# non-zero if anything failed.
# Environment: INTEROP_TIMEOUT (seconds per test, default 30), INTEROP_VERBOSE=1 (print the full
# output of failed tests), INTEROP_ONLY (substring filter on file.test names).
set -u

url=${1:-}
if [ -z "$url" ]; then
  echo "usage: $0 amqp://user:pass@host:port/vhost" >&2
  exit 2
fi
dir=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
per_test_timeout=${INTEROP_TIMEOUT:-30}
export PYTHONDONTWRITEBYTECODE=1 # keep the source tree free of __pycache__

passed=0
failed=0

report_failure() { # name, reason, full output
  echo "FAIL $1: $2"
  if [ -n "${INTEROP_VERBOSE:-}" ]; then
    sed 's/^/    | /' <<<"$3"
  fi
  failed=$((failed + 1))
}

for file in "$dir"/test_*.py; do
  base=$(basename "$file" .py)
  if ! names=$("$python" -s "$file" --list 2>&1); then
    report_failure "$base" "cannot load the test file: $(tail -n 1 <<<"$names")" "$names"
    continue
  fi
  for name in $names; do
    full="$base.$name"
    if [ -n "${INTEROP_ONLY:-}" ] && [[ $full != *"$INTEROP_ONLY"* ]]; then
      continue
    fi
    started=$EPOCHREALTIME
    output=$(timeout -k 5 "$per_test_timeout" "$python" -s "$file" "$url" "$name" 2>&1)
    rc=$?
    elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ] && grep -q "^PASS $name" <<<"$output"; then
      echo "PASS $full (${elapsed}s)"
      passed=$((passed + 1))
      continue
    fi
    last_step=$(grep '^STEP ' <<<"$output" | tail -n 1 | cut -c6- | sed 's/ (at [0-9.]*s)$//')
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      reason="timed out after ${per_test_timeout}s in step '${last_step:-(setup)}'"
    elif fail_line=$(grep -m 1 "^FAIL $name: " <<<"$output"); then
      reason=${fail_line#"FAIL $name: "}
    else
      reason="exit code $rc in step '${last_step:-(setup)}': $(grep -v '^STEP ' <<<"$output" | tail -n 1)"
    fi
    report_failure "$full" "$reason" "$output"
  done
done

echo "interop: $passed passed, $failed failed"
[ $failed -eq 0 ]
