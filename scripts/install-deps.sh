#!/usr/bin/env bash
# Installs the system packages that ibephone's build, tests and demos use,
# only those that are missing. Safe to run repeatedly; needs root (or sudo).
set -euo pipefail
packages=(tshark libasound2-dev pkg-config espeak-ng)
packages+=(libopus-dev)   # the opus crate links the system libopus (found by pkg-config)
packages+=(libwebrtc-audio-processing-dev libclang-dev)   # feature voice-processing (src/media/voice.rs): the webrtc-audio-processing crate 0.5 links the system library 0.3 (pkg-config webrtc-audio-processing) and generates its bindings with bindgen (libclang)
packages+=(sip-tester kamailio)   # interop tests: SIPp against the agent, Kamailio as the proxy
packages+=(kamailio-tls-modules)   # config/kamailio/kamailio.cfg: SIP over TLS (tls.so)
packages+=(baresip-core)   # tests/media/baresip_interop.rs: a real plain SIP peer with SDES SRTP
packages+=(nftables iproute2 iputils-ping conntrack dnsmasq-base tcpdump)   # tests/it/natlab.rs: ../shared/natlab/natlab.sh
packages+=(coturn)   # pkg-server/tests/it/relay.rs (IBEPHONE_TEST_COTURN=1) and scripts/bench-relay.sh: the same REST credentials on coturn; tests/it/natlab.rs: the STUN server of the media tests
packages+=(xvfb x11-apps imagemagick libgl1-mesa-dri libxkbcommon-x11-0)   # desktop app under Xvfb (scripts/screenshots.sh)
packages+=(desktop-file-utils appstream)   # scripts/check-deb.sh: desktop entry and AppStream metadata of the .deb
packages+=(dbus-daemon)   # src/ui/tray.rs (IBEPHONE_TEST_DBUS=1): the tray icon on private session buses
packages+=(sway weston libwayland-client0 libwayland-egl1 libxkbcommon0)   # tests/ui/wayland.rs (IBEPHONE_TEST_WAYLAND=1): the window on headless sway (closes windows from outside, xdg-activation) and headless weston (client-side decorations, minimising); the Wayland libraries the window loads at run time
packages+=(haskell-status-notifier-item-utils haskell-gtk-sni-tray-utils)   # src/ui/tray.rs (IBEPHONE_TEST_SNI=1): a real StatusNotifierWatcher and GTK tray host under Xvfb
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
