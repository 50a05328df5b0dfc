#!/usr/bin/env bash
# Builds every test binary of the workspace once, then runs them in two
# lanes side by side (one step of `scripts/test.sh`; runnable alone, after
# `export IBEPHONE_TEST_...` flags as that script sets them).
#
# Why: `cargo test --workspace` runs its test binaries one after the other,
# and the two long ones spend their time waiting, not computing: `media`
# (real-time calls with audio, ~3 min) and `it` (calls between real
# processes, NAT labs in namespaces, ~2.5 min). Cargo holds the build
# directory's lock while its tests run, so two `cargo test` cannot overlap;
# the binaries are therefore run directly, as cargo would run them (working
# directory = the package's root, CARGO_MANIFEST_DIR set; nothing here reads
# another cargo variable at run time).
#
# Lanes: the real-time audio suite (`media`) and the GUI suite (`ui`) in
# one lane (~3 min); every other binary in the other (~3 min); the
# doc tests through cargo beside them. Each binary's output goes to
# target/test-logs/NAME.log and is printed whole when it ends; every binary
# runs even after a failure (like --no-fail-fast), and the script fails at
# the end if any failed, naming them.
#
#   scripts/run-tests.sh [-- TEST ARGS]   e.g. scripts/run-tests.sh -- --test-threads 2
set -euo pipefail
cd "$(dirname "$0")/.."

test_args=()
if [ "${1:-}" = "--" ]; then
  shift
  test_args=("$@")
fi

logs="$PWD/target/test-logs"
rm -rf "$logs"
mkdir -p "$logs"

# One build of every test binary; diagnostics rendered for people, the
# artifact list as JSON lines for us.
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$logs/artifacts.json"

# "name<TAB>package dir<TAB>executable" for each test binary.
list=$(grep '"reason":"compiler-artifact"' "$logs/artifacts.json" \
  | grep '"profile":{[^}]*"test":true' \
  | grep -v '"executable":null' \
  | sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\2\t\1\t\3/p')
if [ -z "$list" ]; then
  echo "run-tests: no test binary found in the build's output" >&2
  exit 1
fi

# Runs one binary; its log is printed whole (under a lock, so the lanes'
# logs never interleave) and a failure is recorded, not fatal.
run_one() {
  local name=$1 dir=$2 exe=$3
  local log="$logs/$(basename "$exe").log"
  local status=0 TIMEFORMAT='%R s, CPU %U s user + %S s sys'
  # bash's `time` measures the binary and the processes it waited for.
  { time (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe" "${test_args[@]}" >"$log" 2>&1) || status=$?; } 2>"$log.time"
  {
    flock 9
    printf '\n== %s (%s, %s, exit %s)\n' "$name" "${dir##*/}" "$(cat "$log.time")" "$status"
    cat "$log"
  } 9>"$logs/.print-lock"
  if [ "$status" != 0 ]; then
    echo "$name ($exe)" >>"$logs/failed"
  fi
}

# Runs the binaries of one lane in order.
run_lane() {
  local name dir exe
  while IFS=$'\t' read -r name dir exe; do
    [ -n "$exe" ] || continue
    run_one "$name" "$dir" "$exe"
  done
}

audio_gui=$(printf '%s\n' "$list" | awk -F'\t' '$1 == "media" || $1 == "ui"' | sort -k1,1)
others=$(printf '%s\n' "$list" | awk -F'\t' '$1 != "media" && $1 != "ui"')

start=$SECONDS
printf '%s\n' "$audio_gui" | run_lane &
lane_a=$!
printf '%s\n' "$others" | run_lane &
lane_b=$!

doc_status=0
cargo test --workspace --doc >"$logs/doc.log" 2>&1 || doc_status=$?
{
  flock 9
  printf '\n== doc tests (exit %s)\n' "$doc_status"
  cat "$logs/doc.log"
} 9>"$logs/.print-lock"
[ "$doc_status" = 0 ] || echo "doc tests" >>"$logs/failed"

wait "$lane_a" "$lane_b"
echo
echo "run-tests: $(printf '%s\n' "$list" | wc -l) test binaries and the doc tests in $((SECONDS - start)) s"
if [ -s "$logs/failed" ]; then
  echo "run-tests: FAILED:"
  sed 's/^/  /' "$logs/failed"
  exit 1
fi
echo "run-tests: all passed"
