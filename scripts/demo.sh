#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, and
# runs the real processes on 127.0.0.1: pkg-server (PKG + embedded SIP
# registrar/proxy, users made with pkg-admin) and two `ibephone agent`
# phones that log in to it; a secured call between them, the SIP of the
# whole run captured and checked for leaks.
#
#   scripts/demo.sh [--hold SECONDS]
# The capture is left in target/demo.pcap (open it in Wireshark, with
# assets/wireshark/ibesip.lua for our fields).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet --workspace --bins
exec target/release/ibephone demo --pcap target/demo.pcap "$@"
