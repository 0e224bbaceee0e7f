#!/usr/bin/env bash
# Runs every Go fuzz target in the module, one after the other, each for a bounded time.
#   scripts/fuzz.sh [--time DURATION] [PACKAGE...]
# --time is Go's -fuzztime per target (default 5s; CI runs this, scripts/test.sh). For a real
# search run it longer, e.g. `scripts/fuzz.sh --time 10m` (about 2.5 h for all targets) or one
# package: `scripts/fuzz.sh --time 30m ./fsm`. A failing input is written to the package's
# testdata/fuzz/<Target>/ (commit it: it then runs as a regression case in every go test).
# Exit 0 only if every target passed; the last line says how many targets ran.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

die() { echo "fuzz.sh: $*" >&2; exit 2; }
fuzztime=5s
pkgs=()
while (($#)); do
  case $1 in
  --time) [[ $# -ge 2 ]] || die "--time needs a duration (e.g. 5s, 10m)"; fuzztime=$2; shift 2 ;;
  --time=*) fuzztime=${1#*=}; shift ;;
  -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) die "unknown flag $1" ;;
  *) pkgs+=("$1"); shift ;;
  esac
done
[[ $fuzztime =~ ^[0-9]+(ms|s|m|h|x)$ ]] || die "--time takes a Go duration like 5s or 10m (or Nx), got '$fuzztime'"
((${#pkgs[@]})) || pkgs=(./...)

# go test -list prints a package's matching tests, then "ok <import path> <time>".
targets=()
names=()
while read -r line; do
  case $line in
  Fuzz*) names+=("$line") ;;
  ok*)
    pkg=$(awk '{print $2}' <<<"$line")
    for n in "${names[@]}"; do targets+=("$pkg $n"); done
    names=()
    ;;
  esac
done < <(go test -list '^Fuzz' "${pkgs[@]}")
((${#targets[@]})) || die "no fuzz targets found in ${pkgs[*]}"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=()
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  start=$SECONDS
  ok=false
  for attempt in 1 2; do
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"$out" 2>&1; then
      ok=true
      break
    fi
    # The fuzzing engine itself sometimes fails to stop its workers in time on a loaded machine
    # ("context deadline exceeded", no failing input): that says nothing about the code, so
    # the target runs once more. A real finding ("Failing input written to") fails at once.
    grep -q 'Failing input written to' "$out" && break
    grep -q 'context deadline exceeded' "$out" || break
    echo "fuzz.sh: $pkg $name: the fuzzing engine timed out stopping (no failing input); once more" >&2
  done
  if $ok; then
    execs=$(grep -o 'execs: [0-9]*' "$out" | tail -1 | awk '{print $2}')
    echo "fuzz.sh: ok   $pkg $name (${execs:-?} execs, $((SECONDS - start))s)"
  else
    echo "fuzz.sh: FAIL $pkg $name" >&2
    tail -30 "$out" >&2
    failed+=("$pkg $name")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: ${#failed[@]} of ${#targets[@]} fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} fuzz targets passed, $fuzztime each"
