#!/usr/bin/env bash
# Relay throughput (issue 14): CALLS concurrent relayed calls (172-byte
# packets every 20 ms both ways, two allocations per call) through the
# embedded TURN of pkg-server and through Debian's coturn on the same
# machine, with the same REST credentials, in ROUNDS alternating rounds of
# SECS seconds. Prints every round and the medians: relayed packets/s, the
# relay's CPU (cores busy), packets per CPU-second, loss, one-way latency.
#
#   scripts/bench-relay.sh                CALLS=50 SECS=10 ROUNDS=3
#   CALLS=100 ROUNDS=5 scripts/bench-relay.sh
#   PROFILE=debug scripts/bench-relay.sh  the dev build (dependencies are
#                                         optimised there too; no release build)
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-50}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
PROFILE=${PROFILE:-release}
command -v turnserver >/dev/null || { echo "coturn is missing: scripts/install-deps.sh" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p pkg-server --bins
else
  cargo build --quiet -p pkg-server --bins
fi
bin=target/$PROFILE
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/pkg.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$dir"
[argon2]
m_kib = 1024
t = 1
p = 1
[turn]
listen = "127.0.0.1:0"
allowed_peer_ips = ["127.0.0.1"]
max_allocations_per_user = 100000
max_allocations = 100000
user_kbps = 100000000
threads = $THREADS
TOML
$bin/pkg-admin --config "$dir/pkg.toml" init --domain bench.invalid --pkg-url https://127.0.0.1:8443 >/dev/null 2>&1
echo "bench password 1" | $bin/pkg-admin --config "$dir/pkg.toml" user add alice >/dev/null 2>&1
PKG_LOG=warn $bin/pkg-server --config "$dir/pkg.toml" >"$dir/pkg.out" 2>"$dir/pkg.err" &
pkg_pid=$!
pids+=("$pkg_pid")
for _ in $(seq 100); do grep -q '^PKG-SERVER' "$dir/pkg.out" 2>/dev/null && break; sleep 0.1; done
embedded=$(sed -n 's/.* turn=\([^ ]*\).*/\1/p' "$dir/pkg.out")
[ -n "$embedded" ] && [ "$embedded" != off ] || { cat "$dir/pkg.err" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# coturn with the same secret; relay threads as the embedded relay's.
turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" --relay-ip=127.0.0.1 \
  --use-auth-secret --static-auth-secret="$(head -1 "$dir/turn-secret")" --realm=bench.invalid \
  --allow-loopback-peers --no-cli --no-tls --no-dtls --no-tcp-relay --min-port=40000 --max-port=49999 \
  --relay-threads="$THREADS" --log-file=stdout --no-stdout-log >/dev/null 2>&1 &
cot_pid=$!
pids+=("$cot_pid")
sleep 1
run() { # label addr pid
  $bin/pkg-admin --config "$dir/pkg.toml" relay-bench --relay "$2" --pid "$3" --calls "$CALLS" \
    --seconds "$SECS" --label "$1" | tee -a "$dir/results"
}
for r in $(seq "$ROUNDS"); do
  run embedded "$embedded" "$pkg_pid"
  run coturn "127.0.0.1:$port" "$cot_pid"
done
python3 - "$dir/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    rows.setdefault(f["label"], []).append(f)
def med(label, key):
    v = [float(r[key]) for r in rows[label] if r[key] != "n/a"]
    return statistics.median(v) if v else float("nan")
keys = ["pps", "cpu_cores", "pps_per_core", "loss", "latency_p50_ms", "latency_p99_ms"]
print("\nmedians of %d rounds, %s calls" % (len(rows["embedded"]), rows["embedded"][0]["calls"]))
print("%-10s" % "relay" + "".join("%16s" % k for k in keys))
for label in ("embedded", "coturn"):
    print("%-10s" % label + "".join("%16.3f" % med(label, k) for k in keys))
ratio = med("embedded", "pps_per_core") / med("coturn", "pps_per_core")
print("embedded/coturn packets per core: %.2f (target >= 0.8)" % ratio)
PY
