#!/usr/bin/env bash
# Builds every test binary of the workspace once, then runs them (in two
# lanes side by side, one with TEST_LANES=1; the tests that only wait
# always beside them) (one step of `scripts/test.sh`; runnable alone, after
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
# Lanes: see below (the audio suite beside all the others, plus the tests
# that only wait, each in its own process); the doc tests through cargo beside
# them. Each binary's output goes to
# target/test-logs/NAME.log and is printed whole when it ends; every binary
# runs even after a failure (like --no-fail-fast), and the script fails at
# the end if any failed, naming them.
#
#   scripts/run-tests.sh [-- TEST ARGS]   e.g. scripts/run-tests.sh -- --test-threads 2
#   scripts/run-tests.sh --start-sleepers
#       only builds the integration-test binaries (`cargo test --workspace
#       --test it`) and starts the tests that only wait, in the background,
#       then returns: `scripts/test.sh` calls it before it builds the rest,
#       so the 5-minute idle test waits beside that build instead of
#       bounding the test stage. A later plain run finds them started,
#       does not start them again and waits for their verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
test_args=()
case "${1:-}" in
  --) shift; test_args=("$@") ;;
  --start-sleepers) mode=sleepers ;;
  --run-one) mode=one ;; # internal: runs one sleeper (start_sleepers)
  "") ;;
  *) echo "usage: $0 [--start-sleepers | -- TEST ARGS]" >&2; exit 2 ;;
esac

# Tests of the root `it` binary that spend minutes waiting (idle NAT
# mappings, registration refreshes) and almost no CPU: each runs alone in
# its own process beside the lanes, and the `it` lane skips it, so it
# does not stretch that lane by its length.
sleepers=(natlab::natlab_udp_timeout_30_idle_then_call)

# Runs one binary with extra arguments (LABEL names it in the log); its
# log is printed whole (under a lock, so the lanes' logs never
# interleave) and a failure is recorded, not fatal.
run_one() {
  local label=$1 dir=$2 exe=$3
  shift 3
  local log="$logs/$label.log"
  local status=0 TIMEFORMAT='%R s, CPU %U s user + %S s sys'
  # bash's `time` measures the binary and the processes it waited for.
  { time (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe" "$@" "${test_args[@]}" >"$log" 2>&1) || status=$?; } 2>"$log.time"
  {
    flock 9
    printf '\n== %s (%s, %s, exit %s)\n' "$label" "$exe" "$(cat "$log.time")" "$status"
    cat "$log"
  } 9>"$logs/.print-lock"
  if [ "$status" != 0 ]; then
    echo "$label ($exe $*)" >>"$logs/failed"
  fi
  echo "$status" >"$log.exit"
}

logs="$PWD/target/test-logs"
if [ "$mode" = one ]; then
  shift
  run_one "$@"
  exit 0
fi

# The sleepers' state: a line "label<TAB>pid" per started sleeper; each
# writes $logs/LABEL.log.exit when it ends.
started="$logs/sleepers-started"
if [ "$mode" = sleepers ] || [ ! -s "$started" ]; then
  rm -rf "$logs"
fi
mkdir -p "$logs"

# Test binaries as "name<TAB>package dir<TAB>executable", one per line,
# from the JSON lines of a `cargo test --no-run --message-format=json...`.
list_of() {
  grep '"reason":"compiler-artifact"' "$1" \
    | grep '"profile":{[^}]*"test":true' \
    | grep -v '"executable":null' \
    | sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\2\t\1\t\3/p'
}

# Diagnostics rendered for people, the artifact list as JSON lines for us.
if [ "$mode" = sleepers ]; then
  # Only the integration-test binaries, with the same feature set as the
  # whole workspace's build (both packages selected), so none of these
  # artifacts is built twice.
  cargo test --workspace --test it --no-run --message-format=json-render-diagnostics >"$logs/artifacts-it.json"
  list=$(list_of "$logs/artifacts-it.json")
else
  # One build of every test binary.
  cargo test --workspace --no-run --message-format=json-render-diagnostics >"$logs/artifacts.json"
  list=$(list_of "$logs/artifacts.json")
fi
if [ -z "$list" ]; then
  echo "run-tests: no test binary found in the build's output" >&2
  exit 1
fi

# Runs the binaries of one lane in order; the root `it` skips the sleepers.
run_lane() {
  local name dir exe skips
  while IFS=$'\t' read -r name dir exe; do
    [ -n "$exe" ] || continue
    skips=()
    if [ "$name" = it ] && [ "$dir" = "$PWD" ]; then
      for t in "${sleepers[@]}"; do skips+=(--skip "$t"); done
    fi
    run_one "$name-${dir##*/}-$(basename "$exe" | sed 's/.*-//')" "$dir" "$exe" "${skips[@]}"
  done
}

# Two lanes side by side (TEST_LANES=1: one after the other). Lane A is
# the real-time audio suite (`media`: calls whose jitter buffers keep
# about 6 ms of slack, ~160 s), then the library's unit tests (~15 s);
# lane B is everything else (the integration suites of both packages, the
# GUI suite, the binaries' unit tests; ~180 s), run at nice 5 with the doc
# tests, so that when both want a core the audio wins: the other suites'
# timeouts are seconds, not milliseconds. One after the other they took
# ~350 s.
lane_a_list=$(printf '%s\n' "$list" | awk -F'\t' -v root="$PWD" '$1 == "media" || ($1 == "ibephone" && $2 == root)' | sort -r)
lane_b_list=$(printf '%s\n' "$list" | awk -F'\t' -v root="$PWD" '!($1 == "media" || ($1 == "ibephone" && $2 == root))')
root_it=$(printf '%s\n' "$list" | awk -F'\t' -v root="$PWD" '$1 == "it" && $2 == root { print $3 }')

# Starts each sleeper in a session of its own (so `scripts/test.sh` can
# stop it whole), recorded in $started.
start_sleepers() {
  [ -n "$root_it" ] || return 0
  local t label
  for t in "${sleepers[@]}"; do
    label="it-sleeper-${t##*::}"
    setsid "$0" --run-one "$label" "$PWD" "$root_it" --exact "$t" &
    printf '%s\t%s\n' "$label" "$!" >>"$started"
  done
}

# Waits until every started sleeper has written its verdict; a sleeper
# that vanished without one is a failure.
await_sleepers() {
  local label pid
  while IFS=$'\t' read -r label pid; do
    while [ ! -e "$logs/$label.log.exit" ]; do
      if ! kill -0 "$pid" 2>/dev/null && [ ! -e "$logs/$label.log.exit" ]; then
        echo "$label (ended without a verdict)" >>"$logs/failed"
        break
      fi
      sleep 1
    done
  done <"$started"
}

if [ "$mode" = sleepers ]; then
  start_sleepers
  echo "run-tests: started $(wc -l <"$started" 2>/dev/null || echo 0) test(s) that only wait (target/test-logs/it-sleeper-*)"
  exit 0
fi

start=$SECONDS
lanes=()
if [ "${TEST_LANES:-2}" = 2 ]; then
  printf '%s\n' "$lane_a_list" | run_lane &
  lanes+=($!)
  printf '%s\n' "$lane_b_list" | (renice -n 5 -p "$BASHPID" >/dev/null && run_lane) &
  lanes+=($!)
else
  printf '%s\n%s\n' "$lane_a_list" "$lane_b_list" | run_lane &
  lanes+=($!)
fi
# Started already by --start-sleepers, or now.
[ -s "$started" ] || start_sleepers

doc_status=0
nice -n 5 cargo test --workspace --doc >"$logs/doc.log" 2>&1 || doc_status=$?
{
  flock 9
  printf '\n== doc tests (exit %s)\n' "$doc_status"
  cat "$logs/doc.log"
} 9>"$logs/.print-lock"
[ "$doc_status" = 0 ] || echo "doc tests" >>"$logs/failed"

wait "${lanes[@]}"
if [ -s "$started" ]; then
  await_sleepers
  # Ended: nothing left for scripts/test.sh to stop.
  mv "$started" "$started.done"
fi
echo
echo "run-tests: $(printf '%s\n' "$list" | wc -l) test binaries and the doc tests in $((SECONDS - start)) s"
if [ -s "$logs/failed" ]; then
  echo "run-tests: FAILED:"
  sed 's/^/  /' "$logs/failed"
  exit 1
fi
echo "run-tests: all passed"
