#!/usr/bin/env bash
# Fails when a layer of the `ibephone` library refers to a higher one
# (`crate::<higher>` in a `use`, a path or an intra-doc link), or when
# `pkg-server` or `fuzz/` reach past the core modules. The same matrix is
# drawn in ARCHITECTURE.md ("What never imports what"); change both together.
#
#   layer       may refer to (besides itself)
#   ibe         -
#   tunnel      ibe
#   sip         ibe tunnel
#   pkg_client  ibe tunnel sip
#   media       ibe tunnel sip
#   pcap        ibe tunnel sip media          (the capture judge, beside)
#   agent       ibe tunnel sip pkg_client media
#   ui          ibe tunnel sip pkg_client media agent
#   (src/main.rs and src/cli/ are the binary: they may use every layer)
#
#   pkg-server/src      ibephone::{ibe, tunnel, sip, pkg_client}
#   fuzz/fuzz_targets   the same, pcap and media (capture, SDP and jitter-buffer decoders are targets)
set -euo pipefail
cd "$(dirname "$0")/.."

layers="ibe tunnel sip pkg_client media pcap agent cli ui"
declare -A allowed=(
  [ibe]=""
  [tunnel]="ibe"
  [sip]="ibe tunnel"
  [pkg_client]="ibe tunnel sip"
  [media]="ibe tunnel sip"
  [pcap]="ibe tunnel sip media"
  [agent]="ibe tunnel sip pkg_client media"
  [ui]="ibe tunnel sip pkg_client media agent"
)

# Known exceptions, "file:layer" (one per line). Each is a debt with an owner.
# None: the tunnel's vector dialog is written as a capture by
# pcap::write::dialog_capture (the pcap layer may use the tunnel).
known_exceptions=""

fail=0
report() { printf 'check-layers: %s\n' "$*" >&2; fail=1; }

for layer in $layers; do
  [ "$layer" = cli ] && continue
  dir="src/$layer"
  [ -d "$dir" ] || { report "missing layer directory $dir"; continue; }
  for other in $layers; do
    [ "$other" = "$layer" ] && continue
    case " ${allowed[$layer]} " in *" $other "*) continue ;; esac
    # `crate::other::`, `crate::other;`, `crate::other}` ... and grouped
    # imports `use crate::{..., other::...}` (one line or several).
    hits=$(grep -rlE "crate::$other\b|crate::\{[^}]*\b$other\b" "$dir" --include='*.rs' || true)
    grouped=$(perl -0777 -ne 'while (/crate::\{([^}]*)\}/gs) { print "$ARGV\n" if $1 =~ /\b'"$other"'\b/ }' \
      $(find "$dir" -name '*.rs') | sort -u)
    for f in $(printf '%s\n%s\n' "$hits" "$grouped" | sort -u); do
      [ -n "$f" ] || continue
      if printf '%s' "$known_exceptions" | grep -qx "$f:$other"; then
        printf 'check-layers: known exception %s -> crate::%s\n' "$f" "$other"
        continue
      fi
      report "$f (layer $layer) refers to crate::$other; allowed: ${allowed[$layer]:-nothing}"
      grep -nE "crate::$other\b" "$f" | head -3 >&2 || true
    done
  done
done

# A known exception that no longer occurs must be removed from the list.
for entry in $known_exceptions; do
  f=${entry%%:*}
  other=${entry##*:}
  if [ ! -f "$f" ] || ! grep -qE "crate::$other\b" "$f"; then
    report "known exception $entry no longer occurs: remove it from $0"
  fi
done

# The library never names itself (`ibephone::`) from inside: that would hide
# a layer crossing from the grep above.
if grep -rnE '\bibephone::[a-z_]+' src --include='*.rs' | grep -vE '^src/(main\.rs|cli/)' |
  grep -vE '^[^:]+:[0-9]+:\s*//' | grep -q .; then
  report "src/ (library) names ibephone:: (use crate:: instead):"
  grep -rnE '\bibephone::[a-z_]+' src --include='*.rs' | grep -vE '^src/(main\.rs|cli/)' |
    grep -vE '^[^:]+:[0-9]+:\s*//' | head -5 >&2
fi

# pkg-server and the fuzz targets use the cores only: what a core crate split
# would give them (see ARCHITECTURE.md).
# (pkg-server's own tests may drive agents: they are not part of the server.)
check_uses() { # dir, allowed modules (regex alternatives)
  [ -d "$1" ] || return 0
  local bad
  bad=$(grep -rnoE 'ibephone::[a-z_]+' "$1" --include='*.rs' | grep -vE "ibephone::($2)\$" || true)
  [ -z "$bad" ] || report "$1 reaches past the cores: $(printf '%s' "$bad" | head -3 | tr '\n' ' ')"
}
check_uses pkg-server/src 'ibe|tunnel|sip|pkg_client'
check_uses fuzz/fuzz_targets 'ibe|tunnel|sip|pkg_client|pcap|media'

if [ "$fail" = 0 ]; then
  echo "check-layers: ok (no layer refers to a higher one)"
fi
exit "$fail"
