#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, and
# runs a secured call between two phones through the embedded provider on
# 127.0.0.1, capturing the whole run and checking the capture for leaks.
#
#   scripts/demo.sh [--hold SECONDS]
# The capture is left in target/demo.pcap (open it in Wireshark, with
# assets/wireshark/ibesip.lua for our fields).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet --bin ibephone
exec target/release/ibephone demo --pcap target/demo.pcap "$@"
