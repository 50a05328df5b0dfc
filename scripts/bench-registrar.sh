#!/usr/bin/env bash
# Registrar capacity (issue 13): SIPp 3.6 (Debian's sip-tester) registers
# USERS users with digest (MD5: SIPp does no SHA-256) REGS times in all, at
# RATE registrations per second, against the embedded registrar of
# pkg-server and against Debian's Kamailio (config/kamailio/kamailio.cfg,
# the same device credentials written by `pkg-admin kamailio-export`), in
# ROUNDS alternating rounds on the same machine. Prints every round and the
# medians: registrations per CPU-second of the server, and the ratio.
#
#   scripts/bench-registrar.sh                 USERS=50 REGS=5000 RATE=500 ROUNDS=3
#   PROFILE=debug scripts/bench-registrar.sh   the dev build (no release build)
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-50}
REGS=${REGS:-5000}
RATE=${RATE:-500}
ROUNDS=${ROUNDS:-3}
PROFILE=${PROFILE:-release}
for t in sipp kamailio curl python3; do
  command -v "$t" >/dev/null || { echo "$t is missing: scripts/install-deps.sh" >&2; exit 1; }
done
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
free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
domain=bench.invalid
sip_port=$(free_port)
cat >"$dir/pkg.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$dir"
[argon2]
m_kib = 1024
t = 1
p = 1
[sip]
listen = "127.0.0.1:$sip_port"
digest_algorithms = ["MD5"]
user_max_failures = 1000000
addr_max_failures = 1000000
TOML
$bin/pkg-admin --config "$dir/pkg.toml" init --domain $domain --pkg-url https://127.0.0.1:8443 >/dev/null 2>&1
for i in $(seq 0 $((USERS - 1))); do
  echo "bench password $i" | $bin/pkg-admin --config "$dir/pkg.toml" user add "load$i" >/dev/null 2>&1
done
PKG_LOG=warn $bin/pkg-server --config "$dir/pkg.toml" >"$dir/pkg.out" 2>"$dir/pkg.err" &
pkg_pid=$!
pids+=("$pkg_pid")
for _ in $(seq 100); do grep -q '^PKG-SERVER' "$dir/pkg.out" 2>/dev/null && break; sleep 0.1; done
https=$(sed -n 's/^PKG-SERVER listening=\([^ ]*\).*/\1/p' "$dir/pkg.out")
[ -n "$https" ] || { cat "$dir/pkg.err" >&2; exit 1; }

# Each user's device credential, as a phone gets it after login (the
# loopback PKG's self-signed certificate is taken as is: -k).
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
echo "SEQUENTIAL" >"$dir/users.csv"
for i in $(seq 0 $((USERS - 1))); do
  token=$(curl -sk -H 'content-type: application/json' \
    -d "{\"user\":\"load$i\",\"password\":\"bench password $i\"}" "https://$https/v1/login" | field token)
  secret=$(curl -sk -H 'content-type: application/json' -H "authorization: Bearer $token" \
    -d '{"device":"sipp"}' "https://$https/v1/sip-credentials" | field password)
  [ -n "$secret" ] || { echo "no SIP credential for load$i" >&2; exit 1; }
  echo "load$i;[authentication username=load$i password=$secret]" >>"$dir/users.csv"
done

# Kamailio with the same credentials (MD5 HA1s exported by the PKG).
mkdir -p "$dir/kam/db" "$dir/kam/run"
$bin/pkg-admin --config "$dir/pkg.toml" kamailio-export --out "$dir/kam/db" >/dev/null
kam_port=$(free_port)
kamailio -f config/kamailio/kamailio.cfg -DD -E -n 2 -Y "$dir/kam/run" \
  -l "udp:127.0.0.1:$kam_port" -A "SIP_DOMAIN=\"$domain\"" -A "DBURL=\"text://$dir/kam/db\"" \
  2>"$dir/kam/log" &
kam_pid=$!
pids+=("$kam_pid")
sleep 2

tck=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process and its children.
ticks() {
  local total=0 p
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
# run NAME PID PORT: one SIPp round; prints registrations per CPU-second.
run() {
  local name=$1 pid=$2 port=$3 before after out
  before=$(ticks "$pid")
  out=$(cd "$dir" && sipp -sf "$OLDPWD/tests/sipp/register_uac.xml" -inf users.csv -i 127.0.0.1 -p 0 \
    -nostdin -m "$REGS" -r "$RATE" -l 500 -timeout 300 -key domain $domain \
    "127.0.0.1:$port" 2>&1 >/dev/null; echo "rc=$?")
  after=$(ticks "$pid")
  case "$out" in *rc=0*) ;; *) echo "$name: SIPp failed: $out" >&2; exit 1 ;; esac
  python3 -c "print(round($REGS / max(($after - $before) / $tck, 0.01)))"
}
emb=()
kam=()
echo "round  embedded/CPU-s  kamailio/CPU-s  ($REGS REGISTER with digest per round, $USERS users, $RATE/s, $PROFILE)"
for r in $(seq "$ROUNDS"); do
  e=$(run embedded "$pkg_pid" "$sip_port")
  k=$(run kamailio "$kam_pid" "$kam_port")
  emb+=("$e")
  kam+=("$k")
  printf '%5s  %14s  %14s\n' "$r" "$e" "$k"
done
python3 - "${emb[*]}" "${kam[*]}" <<'PY'
import statistics, sys
e = statistics.median(map(float, sys.argv[1].split()))
k = statistics.median(map(float, sys.argv[2].split()))
print(f"median  embedded {e:.0f}/CPU-s  kamailio {k:.0f}/CPU-s  ratio {e / k:.2f}x")
PY
