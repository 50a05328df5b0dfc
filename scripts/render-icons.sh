#!/usr/bin/env bash
# Renders assets/icons/ibephone.svg to the PNG sizes the .deb installs
# (assets/icons/ibephone-N.png, hicolor sizes) with ImageMagick. The PNGs
# are committed: packaging never needs ImageMagick; run this after editing
# the SVG and look at the results.
set -euo pipefail
cd "$(dirname "$0")/../assets/icons"
command -v convert >/dev/null || { echo "needs ImageMagick (apt-get install imagemagick)" >&2; exit 1; }
for s in 16 24 32 48 64 128 256 512; do
  convert -background none -density 300 ibephone.svg -resize "${s}x${s}" "png32:ibephone-$s.png"
done
echo "rendered: $(ls ibephone-*.png | tr '\n' ' ')"
