#!/usr/bin/env bash
# burn is built with its `x86-v4` feature: gemm then carries AVX-512 kernels and picks them at run
# time (pulp's CPU detection), so the same binary must still run, on its AVX2 kernels, on a CPU
# without AVX-512. This runs a real forward pass (`epa score` on the tiny fixture) natively and under
# QEMU's user-mode emulator with `-cpu max` (AVX2 and FMA, no AVX-512 in QEMU's TCG), and compares.
#   scripts/check-no-avx512.sh [EPA_BINARY]     (default target/debug/epa)
set -euo pipefail
cd "$(dirname "$0")/.."
EPA="${1:-target/debug/epa}"
if ! command -v qemu-x86_64 >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null
fi
data=$(mktemp)
trap 'rm -f "$data"' EXIT
printf '%s\n' '{"prompt": "Describe the sea in one sentence.", "response": "The sea is wide, calm and bright today."}' > "$data"
native=$("$EPA" score --model tests/fixtures/tiny-llama --data "$data")
emulated=$(qemu-x86_64 -cpu max "$EPA" score --model tests/fixtures/tiny-llama --data "$data")
echo "native:                 $native"
echo "emulated, no AVX-512:   $emulated"
python3 - "$native" "$emulated" <<'PY'
import json, sys
a, b = (json.loads(x)["logp_sum"] for x in sys.argv[1:3])
assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), f"{a} vs {b}"
print(f"same log-prob within 1e-4 (difference {abs(a - b):.2e})")
PY
