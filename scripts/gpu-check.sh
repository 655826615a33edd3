#!/usr/bin/env bash
# The GPU check (issue 18) on a machine with a GPU, CUDA 13 (driver + NVRTC), PyTorch and
# transformers, but no Rust toolchain: unpacks the binaries scripts/pack-gpu-check.sh left in dist/,
# then runs scripts/gpu_check.py, which writes gpu-check/gpu-check.json.
#
#   scripts/gpu-check.sh                         # --device cuda
#   scripts/gpu-check.sh --device cpu --quick    # the dry run on a CPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
for name in epa epa-tests; do
    if [ -f "dist/$name.xz" ] && [ ! -x "dist/$name" ]; then
        xz -d -k -f "dist/$name.xz" && chmod +x "dist/$name"
    fi
done
exec python3 scripts/gpu_check.py "$@"
