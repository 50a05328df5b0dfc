#!/usr/bin/env bash
# Checks the phone's .deb (scripts/package.sh): its file list, the desktop
# entry (desktop-file-validate), the AppStream metadata (appstreamcli
# validate, when installed) and the binary (`ibephone --version`), first
# unpacked into a throwaway root (dpkg --root, nothing on this machine
# changes), then, as root only, installed for real with `dpkg -i` and
# removed again. scripts/test.sh runs it in full mode (IBEPHONE_TEST_DEB=1).
#
#   scripts/check-deb.sh [target/debian/ibephone_*.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t target/debian/ibephone_*.deb 2>/dev/null | head -1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "check-deb: no .deb (run scripts/package.sh)" >&2; exit 1; }
fail() { echo "check-deb: $*" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

echo "check-deb: $deb"
files=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/ibephone \
         ./usr/share/applications/org.ibephone.ibephone.desktop \
         ./usr/share/metainfo/org.ibephone.ibephone.metainfo.xml \
         ./usr/share/icons/hicolor/scalable/apps/ibephone.svg \
         ./usr/share/icons/hicolor/48x48/apps/ibephone.png \
         ./usr/share/icons/hicolor/256x256/apps/ibephone.png; do
  grep -qx "$f" <<<"$files" || fail "missing $f"
done
dpkg-deb -f "$deb" Depends | grep -q libopus || fail "Depends names no libopus: $(dpkg-deb -f "$deb" Depends)"

# The window's libraries are loaded with dlopen (winit, glutin): no
# DT_NEEDED entry, so dpkg-shlibdeps cannot see them. Every versioned
# name the binary asks for must come from a package the .deb names in
# Depends or Recommends (mapped with `dpkg -S` on this machine; a library
# not installed here cannot be mapped and is skipped).
named=" $(dpkg-deb -f "$deb" Depends), $(dpkg-deb -f "$deb" Recommends),"
bin=$(mktemp)
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/ibephone >"$bin"
loaded=$(strings -n 6 "$bin" | grep -oE 'lib(X[A-Za-z0-9]*|xcb|xkbcommon|EGL|GL|wayland-(client|egl|cursor))\.so\.[0-9]+' | sort -u)
rm -f "$bin"
[ -n "$loaded" ] || fail "the binary names none of the window's libraries (X11, EGL, Wayland): the check above is stale"
for lib in $loaded; do
  pkg=$(dpkg -S "$lib" 2>/dev/null | awk -F': ' -v l="/$lib" 'substr($2, length($2) - length(l) + 1) == l { sub(/:.*/, "", $1); print $1; exit }')
  [ -n "$pkg" ] || continue
  grep -qE "[ ,]$pkg( |,|\()" <<<"$named" || fail "$lib (package $pkg) is loaded at run time but neither in Depends nor in Recommends: $named"
done

# 1. A throwaway root: an empty dpkg database, dependencies taken from
#    this machine (they are what the binary was built against).
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# (the empty database lacks every dependency: dpkg's warnings about them
# are expected and shown only when the unpacking fails)
dpkg --root="$root" --force-depends --force-not-root --force-script-chrootless \
  --log=/dev/null -i "$deb" >"$root/dpkg.log" 2>&1 || { cat "$root/dpkg.log" >&2; fail "dpkg --root -i failed"; }
desktop-file-validate "$root/usr/share/applications/org.ibephone.ibephone.desktop"
if command -v appstreamcli >/dev/null; then
  appstreamcli validate --no-net --explain "$root/usr/share/metainfo/org.ibephone.ibephone.metainfo.xml"
else
  echo "check-deb: appstreamcli not installed: AppStream metadata not validated"
fi
out=$("$root/usr/bin/ibephone" --version)
[ "$out" = "ibephone $version" ] || fail "--version said: $out"
echo "check-deb: throwaway root ok ($out)"

# 2. As root: the real thing, then removed.
if [ "$(id -u)" = 0 ]; then
  if dpkg -s ibephone >/dev/null 2>&1; then
    echo "check-deb: ibephone is installed on this machine already: real install skipped"
  else
    trap 'rm -rf "$root"; dpkg -r ibephone >/dev/null 2>&1 || true' EXIT
    dpkg -i "$deb" >/dev/null
    out=$(/usr/bin/ibephone --version)
    [ "$out" = "ibephone $version" ] || fail "installed ibephone --version said: $out"
    desktop-file-validate /usr/share/applications/org.ibephone.ibephone.desktop
    dpkg -r ibephone >/dev/null
    [ ! -e /usr/bin/ibephone ] || fail "dpkg -r left /usr/bin/ibephone"
    echo "check-deb: dpkg -i / dpkg -r ok"
  fi
fi
echo "check-deb: ok"
