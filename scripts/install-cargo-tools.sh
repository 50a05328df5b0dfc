#!/usr/bin/env bash
# Installs the cargo subcommands the full test run uses, only those that
# are missing: cargo-deny (scripts/check-repo.sh) and cargo-fuzz
# (scripts/fuzz.sh). `scripts/test.sh` runs it in the background while apt
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
