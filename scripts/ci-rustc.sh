#!/usr/bin/env bash
# The workspace's compiler in the full test run (`scripts/test.sh` sets it
# as RUSTC_WORKSPACE_WRAPPER; cargo calls it as `ci-rustc.sh RUSTC ARGS...`
# for the workspace's own crates only).
#
# 1. clippy-driver ($IBEPHONE_CLIPPY_DRIVER), which is rustc plus the
#    lints: the test build is also `cargo clippy --all-targets` with the
#    lints of $CLIPPY_ARGS (-D warnings).
# 2. Test-only units at opt-level 0: those compiled with `--test` (the
#    library's and the binaries' unit tests, the integration-test crates)
#    and the benches and examples, which CI only builds. The library they
#    link and the binaries keep the dev profile's level (1): the
#    real-time media paths the tests drive live there, and at 0 the
#    in-process Opus calls concealed late frames under load. A profile
#    cannot say this: `cargo test` builds every unit of a workspace member,
#    library included, with the one `test` profile. The library's
#    unit-test build compiles the whole crate a second time and was the
#    cold build's last two minutes: 206 CPU-seconds at opt-level 1, 55 at 0
#    (`touch src/lib.rs; cargo test --lib --no-run`, both in one session).
#    rustc takes the last `-C opt-level`, so the one appended here wins.
set -euo pipefail
driver=${IBEPHONE_CLIPPY_DRIVER:?"set by scripts/test.sh: the path of clippy-driver"}
for arg in "$@"; do
  case "$arg" in
    --test | */benches/*.rs | benches/*.rs | */examples/*.rs | examples/*.rs)
      exec "$driver" "$@" -C opt-level=0
      ;;
  esac
done
exec "$driver" "$@"
