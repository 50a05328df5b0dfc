#!/usr/bin/env bash
# Runs the IBE criterion bench (all operations and the peer `ibe` KV1 in one
# run) and prints medians and ratios:  scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ibe -- --noplot "$@" >/dev/null 2>&1
python3 - <<'PY'
import json, os
base = "target/criterion/ibe"
def median(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"] / 1000.0  # ns -> us
ops = ["pairing", "extract", "encrypt_new_recipient", "encrypt_cached_recipient", "decrypt",
       "sign", "verify_cold", "verify_cached_signer", "kv1_encaps", "kv1_decaps"]
m = {op: median(op) for op in ops}
targets = {
    "encrypt_new_recipient": ("kv1_encaps", 0.5),
    "encrypt_cached_recipient": ("kv1_encaps", 0.12),
    "decrypt": ("pairing", 1.0),
    "sign": ("pairing", 0.35),
    "verify_cached_signer": ("pairing", 1.4),
    "verify_cold": ("pairing", 1.8),
}
print(f"{'operation':28} {'median us':>10} {'x pairing':>10} {'x KV1 encaps':>13}  target")
for op in ops:
    t = targets.get(op)
    tgt = f"<= {t[1]}x {t[0]}" if t else ""
    if t:
        ok = m[op] / m[t[0]] <= t[1]
        tgt += "  ok" if ok else "  MISSED"
    print(f"{op:28} {m[op]:10.1f} {m[op]/m['pairing']:10.2f} {m[op]/m['kv1_encaps']:13.2f}  {tgt}")
PY
# The same operations interleaved round by round: the ratios to trust on a
# noisy machine (criterion above measures one operation after the other).
cargo bench --quiet --bench ibe_interleaved 2>/dev/null
# Call setup, 200 plain and 200 secured calls on loopback in one run (issue 6).
cargo bench --quiet --bench call_setup 2>/dev/null
# The provider's relay: embedded TURN vs coturn, 50 relayed calls (issue 14).
if command -v turnserver >/dev/null; then scripts/bench-relay.sh; fi
# Signaling in the NAT lab (issue 13): setup over TLS lab vs loopback, and an
# idle phone's bytes and CPU per hour; root and ../shared/natlab only.
if [ "$(id -u)" = 0 ] && [ -f ../shared/natlab/natlab.sh ]; then
  cargo build --release --quiet -p pkg-server --bins
  cargo bench --quiet --bench signaling 2>/dev/null
fi
