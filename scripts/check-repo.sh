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
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-layers.sh
scripts/check-msrv.sh

if ! cargo deny --version >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
cargo deny check licenses bans sources

RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace
echo "check-repo: ok"
