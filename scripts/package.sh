#!/usr/bin/env bash
# Builds the phone's Debian package with cargo-deb (installed here when
# missing): target/debian/ibephone_<version>_<arch>.deb with the binary,
# the desktop entry, the icons (SVG and PNG sizes) and the AppStream
# metadata (see [package.metadata.deb] in Cargo.toml).
#
#   scripts/package.sh           release build (what to hand to people)
#   scripts/package.sh --dev     package target/debug/ibephone as it is,
#                                no build (CI: the binary `cargo test
#                                --workspace` just built; a second, release
#                                build of the whole stack would cost CI
#                                most of its time budget on 2 cores)
#   scripts/package.sh --server  also the pkg-server package (release)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
server=0
for a in "$@"; do
  case "$a" in
    --dev) dev=1 ;;
    --server) server=1 ;;
    *) echo "usage: $0 [--dev] [--server]" >&2; exit 2 ;;
  esac
done

# Pinned there: cargo-deb 3.8 packages a dev-profile binary with a warning
# that a later version may refuse it (see --dev).
scripts/install-cargo-tools.sh deb

if [ "$dev" = 1 ]; then
  [ -x target/debug/ibephone ] || cargo build --bin ibephone
  # cargo-deb warns that it is meant for release profiles: right, this
  # package is for the test only and never handed out.
  cargo deb -p ibephone --profile dev --no-build --fast
else
  cargo deb -p ibephone
fi
if [ "$server" = 1 ]; then
  cargo deb -p pkg-server
fi
ls -1 target/debian/*.deb
