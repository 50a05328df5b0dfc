#!/usr/bin/env bash
# Runs every check and test of ibephone on a fresh Debian/Ubuntu machine:
# installs what is missing (apt packages, rustfmt/clippy), then fmt check,
# clippy with -D warnings, the fuzz targets' build, and every test of the
# workspace, interop tests with real tools (tshark, PostgreSQL, ...)
# included. `.ci/run` calls exactly this script.
#
#   scripts/test.sh           everything (installs tools, enables interop tests)
#   scripts/test.sh --quick   no installs, no interop tests (inner dev loop)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

start=$SECONDS
log() { printf '\n== [%ss, disk free %s] %s\n' "$((SECONDS - start))" "$(df -h --output=avail . | tail -1 | tr -d ' ')" "$*"; }

# Runs a command in the background in a session of its own (so the exit
# trap can stop it whole) at the lowest CPU priority. With the kernel's
# autogroup scheduling (kernel.sched_autogroup_enabled, on by default),
# a new session is a new scheduling group that gets an equal share with
# the build and the tests whatever its nice value: `setsid nice -n 19`
# alone took half the cores from them. The group's own nice value
# (/proc/self/autogroup) is set to 19 as well. LOG gets its output;
# bg_pid is set to the session's pid (a child of this shell, for `wait`).
background() {
  local log=$1
  shift
  setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"' background "$@" >"$log" 2>&1 &
  bg_pid=$!
}
# cargo doc's build directory starts as a copy of the test build's
# (hard links, made in about two seconds before the rest of the build
# writes there; the fingerprints copied for real, as cargo rewrites
# them): cargo doc needs every dependency in check mode, which the test
# build does not make, but the build scripts' runs (SQLite's and Opus's
# C among them) and the proc macros it reuses. Every unit cargo doc
# adds gets files and directories of its own, so the copy never writes
# into the test build's files. Cold, cargo doc took 269 CPU-seconds in
# an empty directory, 155 in the copy (CHANGELOG.md, issue 17).
# (With CARGO_TARGET_DIR set elsewhere on another file system, where
# hard links cannot go, cargo doc builds from scratch.)
seed_doc_build_dir() {
  local test_build="${CARGO_TARGET_DIR:-target}/debug"
  rm -rf target/check-repo
  mkdir -p target/check-repo
  if cp -al "$test_build" target/check-repo/debug 2>/dev/null; then
    rm -rf target/check-repo/debug/.fingerprint target/check-repo/debug/.cargo-lock
    cp -a "$test_build/.fingerprint" target/check-repo/debug/
  else
    rm -rf target/check-repo/debug
    echo "test.sh: cargo doc builds in an empty directory ($test_build cannot be hard-linked into target/check-repo)"
  fi
}

tools_pid=""
bg_pid=""
sleepers_started=""
fuzz_pid=""
checks_pid=""
if [ "$quick" = 0 ]; then
  # One build from scratch: incremental caches would only take disk space.
  export CARGO_INCREMENTAL=0
  # The cargo tools (cargo-deny, cargo-fuzz, cargo-deb) compile while apt downloads
  # and installs: CPU-bound next to I/O-bound, about three minutes saved
  # on a cold machine; they build with a cheap release profile (see the
  # script). At nice 19: once apt is done they take only the cycles the
  # test build leaves idle (it is the run's critical path; the tools are
  # first needed by the stages that run beside the tests, which wait for
  # this install through the script's lock). Output:
  # target/tools-install.log.
  mkdir -p target
  log "installing cargo tools in the background at nice 19 (target/tools-install.log)"
  background target/tools-install.log scripts/install-cargo-tools.sh
  tools_pid=$bg_pid
  log "installing system packages"
  scripts/install-deps.sh
  export IBEPHONE_TEST_TSHARK=1
  export IBEPHONE_TEST_ESPEAK=1   # espeak-ng sentences through media and agent calls
  export IBEPHONE_TEST_SIPP=1
  export IBEPHONE_TEST_KAMAILIO=1
  export IBEPHONE_TEST_BARESIP=1  # baresip calls an ibephone agent (SDES SRTP, audio both ways)
  # tests/it/natlab.rs: two homes behind NATs in network namespaces
  # (../shared/natlab/natlab.sh; needs root, as in CI)
  export IBEPHONE_TEST_NATLAB=1
  export IBEPHONE_TEST_COTURN=1   # pkg-server/tests/it/relay.rs: coturn's uclient on the embedded relay, coturn with the PKG's secret
  export IBEPHONE_TEST_DBUS=1     # src/ui/tray.rs: the tray icon on private session buses (dbus-daemon)
  export IBEPHONE_TEST_SNI=1      # src/ui/tray.rs: and in a real tray host under Xvfb (status-notifier-watcher, gtk-sni-tray-standalone)
  export IBEPHONE_TEST_WAYLAND=1  # tests/ui/wayland.rs: the real window on headless Wayland compositors (sway, weston) with a tray
  export IBEPHONE_TEST_DEB=1      # the .deb of the debug binary cargo test built: scripts/package.sh --dev, scripts/check-deb.sh
fi

cleanup() {
  # The sleepers, the tools' install, the fuzzing and the checks each
  # have a session of their own
  # (setsid): stop them whole.
  if [ -n "$sleepers_started" ] && [ -s target/test-logs/sleepers-started ]; then
    cut -f2 target/test-logs/sleepers-started | while read -r pid; do kill -- "-$pid" 2>/dev/null || true; done
  fi
  if [ -n "$tools_pid" ]; then kill -- "-$tools_pid" 2>/dev/null || true; fi
  if [ -n "$fuzz_pid" ]; then kill -- "-$fuzz_pid" 2>/dev/null || true; fi
  if [ -n "$checks_pid" ]; then kill -- "-$checks_pid" 2>/dev/null || true; fi
  if [ "$quick" = 0 ]; then scripts/start-postgres.sh --stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

log "rust components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

log "cargo fmt --check"
cargo fmt --all -- --check

if [ "$quick" = 1 ]; then
  log "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
  # The full mode builds (and runs) the fuzz targets in scripts/fuzz.sh.
  log "fuzz targets build"
  cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
else
  # Clippy and the test build in ONE compilation (issue 17): clippy-driver
  # is rustc plus the lints, so as the workspace's compiler it lints every
  # target of every workspace crate (lib, bins, tests, benches, examples;
  # what `cargo clippy --workspace --all-targets` covers) with -D warnings
  # while it builds the test binaries. A separate `cargo clippy` would
  # compile all ~650 dependencies a second time in check mode (~170 s on
  # two cores, cold) before the test build could start. The variables
  # stay exported, so every later cargo step of this script (the test
  # binaries' build in run-tests.sh, the doc tests, the package) finds
  # these artifacts fresh; the fuzz and doc checks unset them.
  # The wrapper (scripts/ci-rustc.sh) also builds the test-only units
  # (unit tests, integration-test crates, benches, examples) at opt-level
  # 0, the library and binaries they test at the dev profile's level.
  log "test build with clippy -D warnings on every workspace target (scripts/ci-rustc.sh: clippy-driver as the workspace's compiler)"
  IBEPHONE_CLIPPY_DRIVER=$(rustup which clippy-driver)
  RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/ci-rustc.sh"
  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  export IBEPHONE_CLIPPY_DRIVER RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
  # The background stages build outside the wrapper (their own workspace,
  # their own build directory).
  without_wrapper=(env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS -u IBEPHONE_CLIPPY_DRIVER)
  # The integration-test binaries first: the tests that only wait (the
  # 5-minute idle NAT test) then start and wait beside the rest of the
  # build, instead of bounding the test stage by their length.
  scripts/run-tests.sh --start-sleepers
  sleepers_started=1
  # Fuzzing and the repository checks run beside the rest of the build
  # and the tests, at the lowest CPU priority: they take the cores only
  # when the rest leaves them idle (the tests spend most of their time
  # waiting on real-time calls, timers and network namespaces), so the
  # real-time audio tests are not slowed, and their minutes (the fuzz
  # targets' instrumented build and runs; cargo doc's check build of
  # every dependency) mostly do not add to the total. Each first waits
  # for the cargo tools' install (its lock). Started before the first
  # build step instead, they slowed it (cold clean clones: 620 s instead
  # of 492 s for that step, 1031 s instead of 967 s in all). Their
  # verdicts are awaited after the tests; a crash or a failed check fails
  # the run. cargo doc gets a build directory of its own, so it never
  # holds the lock the doc tests need.
  log "fuzzing in the background at nice 19, after the cargo tools (scripts/fuzz.sh; output in target/fuzz-stage.log)"
  background target/fuzz-stage.log "${without_wrapper[@]}" scripts/fuzz.sh
  fuzz_pid=$bg_pid
  seed_doc_build_dir
  log "repository checks in the background at nice 19, after the cargo tools: layering, MSRV, cargo deny, cargo doc (scripts/check-repo.sh; output in target/check-repo.log)"
  background target/check-repo.log "${without_wrapper[@]}" CARGO_TARGET_DIR="$PWD/target/check-repo" scripts/check-repo.sh
  checks_pid=$bg_pid
  log "test build of every other target, beside the tests that only wait"
  cargo test --workspace --all-targets --no-run --quiet
fi


if [ "$quick" = 0 ]; then
  log "PostgreSQL for the PKG scale-out tests"
  IBEPHONE_TEST_POSTGRES=$(scripts/start-postgres.sh)
  export IBEPHONE_TEST_POSTGRES
fi

log "cargo test (workspace): every test binary run, the tests that only wait beside the others (scripts/run-tests.sh)"
scripts/run-tests.sh

if [ "${IBEPHONE_TEST_DEB:-}" = 1 ]; then
  # The debug binary cargo test just built, packaged as is: no release
  # build of the whole stack in CI (scripts/package.sh explains).
  log "Debian package (scripts/package.sh --dev, scripts/check-deb.sh)"
  scripts/package.sh --dev
  scripts/check-deb.sh
fi

# Awaits a background stage: WHAT, the name of its pid variable, its log,
# and the lines of the log to show when it passed (an extended regex). A
# failure shows the whole log and fails the run; the pid is cleared either
# way, so the exit trap leaves it alone.
await_stage() {
  local what=$1 var=$2 log_file=$3 shown=$4 pid=${!2}
  [ -n "$pid" ] || return 0
  log "waiting for $what"
  local status=0
  wait "$pid" || status=$?
  printf -v "$var" ''
  if [ "$status" != 0 ]; then
    cat "$log_file"
    exit 1
  fi
  grep -E "$shown" "$log_file" || true
}
await_stage "the repository checks" checks_pid target/check-repo.log '.'
await_stage "the fuzzing" fuzz_pid target/fuzz-stage.log '^(== fuzz|instrumented build|[0-9]+ seed files)'

log "done (target/ holds $(du -sh target 2>/dev/null | cut -f1))"
