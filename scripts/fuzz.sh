#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time, seeded from
# tests/vectors (every hex field decoded, every text field), the committed
# captures and the regression inputs in fuzz/regressions/<target>/.
# Installs cargo-fuzz when it is missing. A crash fails the script; the
# input is left in fuzz/artifacts/<target>/ (keep it as a regression
# input and as a unit test beside the code it crashed).
#
#   scripts/fuzz.sh            every target, FUZZ_SECONDS (default 15) each
#   scripts/fuzz.sh 60 T...    60 s each, only targets T...
#
# Budget on a cold 2-core machine: the cargo-fuzz install, the instrumented
# build (the library with its `pcap` feature only: no PKG client, agent or
# CLI crates), then 14 targets x 15 s, two at a time (FUZZ_JOBS).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-${FUZZ_SECONDS:-15}}
shift || true
# cargo-fuzz needs nightly flags (-Z sanitizer); the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, as earlier sessions ran it.
export RUSTC_BOOTSTRAP=1

scripts/install-cargo-tools.sh fuzz

targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Seeds: one file per vector field (hex decoded, text as is), the vector
# files themselves and the committed captures.
seeds=target/fuzz-seeds
rm -rf "$seeds"
mkdir -p "$seeds"
cp tests/vectors/*.json tests/captures/* "$seeds"/
if command -v python3 >/dev/null; then
  python3 - "$seeds" tests/vectors/*.json <<'EOF'
import hashlib, json, os, re, sys
out = sys.argv[1]
def walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)
    elif isinstance(x, str):
        yield x
for path in sys.argv[2:]:
    for s in walk(json.load(open(path))):
        data = bytes.fromhex(s) if re.fullmatch(r"(?:[0-9a-f]{2})+", s) else s.encode()
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
EOF
fi
echo "$(ls "$seeds" | wc -l) seed files"

# No sanitizer: the code is safe Rust (what it checks for is a panic, an
# abort, a timeout or memory exhaustion), and the build takes half as long.
flags=(--sanitizer none --debug-assertions)
start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "instrumented build: $((SECONDS - start)) s"

# FUZZ_JOBS targets at a time (default: one per CPU core). libFuzzer runs
# one process per target, so on 2 cores the second core sat idle while
# the targets ran one after the other; each target still has its own core
# for its full FUZZ_SECONDS. Each one's output is printed when it ends.
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
fuzz_one() { # target; prints its summary, fails on a crash
  local t=$1 corpus=target/fuzz-corpus/$1
  mkdir -p "$corpus" "fuzz/regressions/$t"
  if cargo fuzz run "${flags[@]}" "$t" "$corpus" "$seeds" "fuzz/regressions/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"target/fuzz-$t.out" 2>"target/fuzz-$t.log"; then
    printf '== fuzz %s (%s s): %s\n' "$t" "$secs" \
      "$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "target/fuzz-$t.log" | tr '\n' ' ')"
  else
    printf '== fuzz %s (%s s): FAILED\n%s\n' "$t" "$secs" "$(tail -40 "target/fuzz-$t.log")"
    return 1
  fi
}
rm -f target/fuzz-*.failed
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  { fuzz_one "$t" || touch "target/fuzz-$t.failed"; } &
done
wait
failed=()
for t in "${targets[@]}"; do
  [ ! -e "target/fuzz-$t.failed" ] || failed+=("$t")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzzing done: ${#targets[@]} targets, $((SECONDS - start)) s after the install"
