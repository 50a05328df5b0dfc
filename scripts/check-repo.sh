#!/usr/bin/env bash
# Repository checks beyond fmt/clippy/tests (issue 17), one step of
# `scripts/test.sh`'s full mode; runnable alone:
# - scripts/check-layers.sh: no layer of the library refers to a higher one
#   (the matrix is in the script and in ARCHITECTURE.md);
# - scripts/check-msrv.sh: the declared rust-version covers every
#   dependency's declared floor (one toolchain only on these machines);
# - cargo deny check licenses bans sources (deny.toml). Advisories are not
#   checked: the RustSec database cannot be fetched on these machines; run
#   `cargo deny check advisories` where a copy is at hand;
# - RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace: no broken
#   intra-doc link, no doc warning (`cargo test` runs the doc examples).
# - cargo check --target x86_64-pc-windows-gnu --no-default-features --features cli --lib --bins,
#   when that target and MinGW are installed (else it says it skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-layers.sh
scripts/check-msrv.sh

scripts/install-cargo-tools.sh deny
cargo deny check licenses bans sources

RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace

# The phone's library for Windows (issue 15: no unconditional
# std::os::unix). Only where the target and a MinGW C compiler (ring and
# libopus are C) are installed: this machine has no network for rustup in
# general, so the step says when it is skipped instead of failing.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu \
   && command -v x86_64-w64-mingw32-gcc >/dev/null; then
  cargo check --quiet --target x86_64-pc-windows-gnu --no-default-features --features cli --lib --bins
  echo "check-repo: windows (x86_64-pc-windows-gnu) library checks"
else
  echo "check-repo: windows check skipped (rustup target x86_64-pc-windows-gnu or gcc-mingw-w64-x86-64 missing)"
fi
echo "check-repo: ok"
