#!/usr/bin/env bash
# Installs the cargo subcommands the full test run uses, only those that
# are missing: cargo-deny (scripts/check-repo.sh), cargo-fuzz
# (scripts/fuzz.sh) and cargo-deb (scripts/package.sh, the same pinned
# version). `scripts/test.sh` runs it in the background while apt
# installs the system packages.
set -euo pipefail
if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny"
  cargo install --locked cargo-deny
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb"
  cargo install --locked cargo-deb --version 3.8.0
fi
