#!/usr/bin/env bash
# Installs the cargo subcommands the full test run uses, only those that
# are missing: cargo-deny (scripts/check-repo.sh), cargo-fuzz
# (scripts/fuzz.sh) and cargo-deb (scripts/package.sh, the same pinned
# version). `scripts/test.sh` runs it in the background while apt
# installs the system packages; the other scripts call it for the one
# tool they need.
#
#   scripts/install-cargo-tools.sh            all three
#   scripts/install-cargo-tools.sh deny fuzz  only those
#
# The tools are built with a cheap release profile (set here only, for
# these installs): opt-level 0, no LTO, 256 codegen units, no debug info.
# cargo-deny's own profile (fat LTO, one codegen unit, opt-level 3) cost
# 387 CPU-seconds to install on the 2-core dev machine, opt-level 1 334,
# opt-level 0 116; `cargo deny check licenses bans sources` then takes
# 4.4 instead of 1.4 CPU-seconds (CHANGELOG.md, issue 17). cargo-deb keeps
# its own opt-level 2 for its compressors (per-package overrides win).
set -euo pipefail

# One install at a time: `scripts/test.sh` starts the full install in the
# background at nice 19 and the stages that need a tool (fuzz.sh,
# check-repo.sh, package.sh) call this script for theirs, so they wait
# here until that install is done instead of building the same tool
# beside it.
lock="${CARGO_HOME:-$HOME/.cargo}/.ibephone-tools.lock"
mkdir -p "$(dirname "$lock")"
exec 9>"$lock"
flock 9

export CARGO_PROFILE_RELEASE_OPT_LEVEL=0
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256
export CARGO_PROFILE_RELEASE_DEBUG=false

tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(deny fuzz deb)
for t in "${tools[@]}"; do
  case "$t" in
    deny | fuzz | deb) ;;
    *) echo "usage: $0 [deny|fuzz|deb]..." >&2; exit 2 ;;
  esac
  if cargo "$t" --version >/dev/null 2>&1; then
    continue
  fi
  echo "installing cargo-$t"
  case "$t" in
    deny) cargo install --locked cargo-deny ;;
    fuzz) cargo install --locked cargo-fuzz ;;
    # Pinned: cargo-deb 3.8 packages a dev-profile binary (scripts/package.sh --dev).
    deb) cargo install --locked cargo-deb --version 3.8.0 ;;
  esac
done
