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
#   fuzz/fuzz_targets   ibephone::{ibe, tunnel, sip, pcap, media} (capture, SDP and jitter-buffer decoders are targets)
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
check_uses fuzz/fuzz_targets 'ibe|tunnel|sip|pcap|media'

# Features (Cargo.toml [features], ARCHITECTURE.md "Features"): the layers
# above the cores are built only with their feature, so that pkg-server
# (`pkg-client`) and the fuzz targets (`pcap`) build none of the rest.
# - src/lib.rs declares each gated layer under its feature;
# - a layer's feature enables the feature of every gated layer it may
#   refer to (the matrix above);
# - a layer names no optional crate that its feature leaves out (the cores
#   none at all), so building with fewer features cannot break.
declare -A feature=([pkg_client]=pkg-client [media]=media [pcap]=pcap [agent]=agent [ui]=gui)
# Features a layer uses only under its own #[cfg(feature = ...)] (the sound
# card: cpal; echo cancellation: webrtc-audio-processing in media::voice).
# The fuzz build (media without audio) compiles that cfg off.
declare -A within=([media]="audio voice-processing" [agent]=audio [ui]=audio)
meta=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null ||
  cargo metadata --no-deps --format-version 1)
# closure FEATURE...: the features and optional crates (as `dep:name`, crate
# names with `_`) that FEATURE... enable, one per line; "" = no feature.
closure() {
  perl -MJSON::PP -e '
    my $m = JSON::PP->new->decode(shift @ARGV);
    my ($p) = grep { $_->{name} eq "ibephone" } @{ $m->{packages} };
    my $f = $p->{features};
    my %opt = map { ($_->{rename} // $_->{name}) => 1 } grep { $_->{optional} } @{ $p->{dependencies} };
    if (@ARGV && $ARGV[0] eq "--all-optional") { print "dep:$_\n" for sort keys %opt; exit }
    my (%seen, @todo);
    @todo = grep { length } @ARGV;
    while (defined(my $x = shift @todo)) {
      next if $seen{$x}++;
      if ($x =~ /^dep:(.*)/) { next }
      die "check-layers: no feature $x in Cargo.toml\n" unless exists $f->{$x};
      for my $e (@{ $f->{$x} }) {
        $e =~ s{/.*}{};           # "crate/feature" enables the crate
        $e = "dep:$e" if $opt{$e} && $e !~ /^dep:/;
        push @todo, $e;
      }
    }
    for (sort keys %seen) { (my $k = $_) =~ tr/-/_/ if /^dep:/; print((/^dep:/ ? $k : $_), "\n") }
  ' "$meta" "$@"
}
all_optional=$(closure --all-optional | sed 's/-/_/g')
for layer in ibe tunnel sip pkg_client media pcap agent ui; do
  f=${feature[$layer]:-}
  if [ -n "$f" ]; then
    grep -B1 -E "^pub mod $layer;" src/lib.rs | grep -qF "#[cfg(feature = \"$f\")]" ||
      report "src/lib.rs: pub mod $layer; is not under #[cfg(feature = \"$f\")]"
  fi
  enabled=$(closure "$f" ${within[$layer]:-})
  for lower in ${allowed[$layer]:-}; do
    g=${feature[$lower]:-}
    [ -z "$g" ] || grep -qx "$g" <<<"$enabled" ||
      report "feature ${f:-(none)} of layer $layer does not enable $g (layer $lower)"
  done
  left_out=$(grep -vxF -f <(printf '%s\n' "$enabled") <<<"$all_optional" | sed 's/^dep://' | paste -sd'|' || true)
  [ -n "$left_out" ] || continue
  hits=$(grep -rnE "(^|[^A-Za-z0-9_:])($left_out)::|\buse ($left_out)\b|extern crate ($left_out)\b" "src/$layer" --include='*.rs' |
    grep -vE '^[^:]+:[0-9]+:\s*//' || true)
  [ -z "$hits" ] || report "src/$layer (feature ${f:-none: a core}) uses a crate its feature does not enable (one of $left_out): $(head -2 <<<"$hits" | tr '\n' ' ')"
done

# What the features are for, checked on the dependency graphs (no build):
# the server's own build has no media, capture, agent, sound or GUI crate;
# the fuzz build no PKG client, agent, CLI, sound or GUI crate.
lacks() { # what, crates that must be absent, cargo tree arguments...
  local what=$1 absent=$2 present
  shift 2
  present=$(cargo tree "$@" -e normal,build --prefix none -f '{p}' --offline 2>/dev/null |
    awk '{print $1}' | sort -u | grep -xE "$absent" | tr '\n' ' ' || true)
  [ -z "$present" ] || report "$what builds $present(features: Cargo.toml, ARCHITECTURE.md \"Features\")"
}
lacks "pkg-server" 'opus|webrtc-srtp|rtp|rtcp|hound|ringbuf|is|pcap-file|etherparse|tracing-appender|rustls-native-certs|cpal|webrtc-audio-processing|eframe|egui|winit|ksni' \
  -p pkg-server
lacks "fuzz/" 'hyper|hickory-resolver|argon2|directories|clap|tracing-subscriber|tracing-appender|toml|rustls-native-certs|cpal|webrtc-audio-processing|eframe|egui|winit|ksni' \
  --manifest-path fuzz/Cargo.toml

if [ "$fail" = 0 ]; then
  echo "check-layers: ok (no layer refers to a higher one; each layer's feature enables what it uses; pkg-server and fuzz/ build only their layers)"
fi
exit "$fail"
