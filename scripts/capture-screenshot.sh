#!/usr/bin/env bash
# assets/screenshots/tshark-demo.png: what tshark (with our dissector
# assets/wireshark/ibesip.lua) and `ibephone pcap verify` show of a call's
# capture, rendered to a PNG with ImageMagick.
#
#   scripts/capture-screenshot.sh [CAPTURE.pcap]
# Without an argument the demo is run first (target/demo.pcap).
set -euo pipefail
cd "$(dirname "$0")/.."
pcap=${1:-target/demo.pcap}
cargo build --quiet --workspace --bins
if [ $# -eq 0 ]; then
    target/debug/ibephone demo --pcap "$pcap" --hold 2
fi
set +o pipefail   # head ends the pipes early on purpose
text=$(mktemp)
{
    echo "\$ tshark -r $(basename "$pcap") -X lua_script:assets/wireshark/ibesip.lua -Y 'sip.msg_body' \\"
    echo "    -T fields -e frame.number -e sip.Method -e sip.Status-Code -e sip.Content-Type -e ibesip.key_transport -e ibesip.seq"
    tshark -r "$pcap" -X lua_script:assets/wireshark/ibesip.lua -Y 'sip.msg_body' \
        -T fields -e frame.number -e sip.Method -e sip.Status-Code -e sip.Content-Type \
        -e ibesip.key_transport -e ibesip.seq 2>/dev/null | head -n 12 | cut -c1-130
    echo
    echo "\$ ibephone pcap verify $(basename "$pcap")   (SIP lines: first 10)"
    out=$(target/debug/ibephone pcap verify "$pcap" || true)
    grep -v '^media \|^        \|SIP messages:\|^verdict' <<<"$out" | head -n 10 | cut -c1-130
    # the flows of the call (100 packets and more), then the totals
    grep '^media ' <<<"$out" | grep -E ': [0-9]{3,} packets' | head -n 4 |
        sed -e 's/ ssrc [0-9a-f]*//' -e 's/, size = G.711 + /, G.711 + /' -e 's/ (AEAD_AES_128_GCM)//'
    grep 'SIP messages:\|^verdict' <<<"$out" | sed 's/; /;\n    /g'
} >"$text"
# One label per line, stacked (this ImageMagick refuses a multi-line
# label:, and reading @files is forbidden by its policy); '%' and '\' are
# escapes in label:, so they are doubled; an empty line is a spacer.
parts=$(mktemp -d)
trap 'rm -rf "$parts"; rm -f "$text"' EXIT
i=0
while IFS= read -r line; do
    i=$((i + 1))
    out_png=$(printf '%s/%04d.png' "$parts" "$i")
    if [ -z "${line// /}" ]; then
        convert -size 1x14 xc:'#1e1e1e' "$out_png"
    else
        l=$(printf '%s' "$line" | sed -e 's/\\/\\\\/g' -e 's/%/%%/g')
        convert -background '#1e1e1e' -fill '#e0e0e0' -font DejaVu-Sans-Mono \
            -pointsize 11 "label:$l" "$out_png"
    fi
done < <(expand -t 4 "$text")
convert -background '#1e1e1e' "$parts"/*.png -append -bordercolor '#1e1e1e' -border 14 \
    assets/screenshots/tshark-demo.png
echo "wrote assets/screenshots/tshark-demo.png"
