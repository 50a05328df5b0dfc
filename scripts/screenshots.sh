#!/usr/bin/env bash
# Screenshots of the desktop app for the README: runs the real window
# (eframe, OpenGL through Mesa's software renderer) under Xvfb, brings it to
# each scene with `examples/ui-screens.rs` (a provider in-process, alice in
# the window, bob a headless agent) and writes assets/screenshots/*.png.
#
#   scripts/screenshots.sh            every scene
#   scripts/screenshots.sh call       one scene (wizard confirm phone incoming call)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xwd >/dev/null || need+=(x11-apps)
dpkg -s imagemagick >/dev/null 2>&1 || need+=(imagemagick)
dpkg -s libgl1-mesa-dri >/dev/null 2>&1 || need+=(libgl1-mesa-dri)
dpkg -s libxkbcommon-x11-0 >/dev/null 2>&1 || need+=(libxkbcommon-x11-0)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

scenes=("$@")
[ "${#scenes[@]}" -gt 0 ] || scenes=(wizard confirm phone incoming call)

cargo build --quiet --example ui-screens
bin=target/debug/examples/ui-screens
out=assets/screenshots
mkdir -p "$out"

display=:97
Xvfb "$display" -screen 0 800x600x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
trap 'kill "$xvfb" 2>/dev/null || true' EXIT
sleep 1

for scene in "${scenes[@]}"; do
  log=$(mktemp)
  DISPLAY=$display LIBGL_ALWAYS_SOFTWARE=1 WAYLAND_DISPLAY= "$bin" "$scene" >"$log" 2>&1 &
  app=$!
  ok=0
  for _ in $(seq 1 600); do
    if grep -q SCENE-READY "$log"; then ok=1; break; fi
    if ! kill -0 "$app" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ "$ok" = 1 ]; then
    sleep 1.5   # let the window draw the scene
    xwd -root -display "$display" -silent | convert xwd:- -crop 760x560+0+0 +repage "$out/$scene.png"
    echo "wrote $out/$scene.png"
  else
    echo "scene $scene did not come up:" >&2
    cat "$log" >&2
  fi
  kill "$app" 2>/dev/null || true
  wait "$app" 2>/dev/null || true
  rm -f "$log"
  [ "$ok" = 1 ] || exit 1
done
