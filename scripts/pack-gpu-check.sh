#!/usr/bin/env bash
# Builds what the GPU check carries to a GPU machine that has no Rust toolchain: the `epa` binary and
# the integration-test binary, both with the `cuda` feature (offline, through scripts/build-cuda.sh),
# stripped and xz-compressed into dist/ (keep dist/ + scripts/ + tests/fixtures/ under 64 MiB).
#
#   scripts/pack-gpu-check.sh            # then, on the GPU machine: scripts/gpu-check.sh
#   FEATURES=wgpu scripts/pack-gpu-check.sh   # the same for another backend
set -euo pipefail
cd "$(dirname "$0")/.."
features="${FEATURES:-cuda}"
build=(cargo)
[ "$features" = cuda ] && build=(scripts/build-cuda.sh)
t0=$SECONDS
"${build[@]}" build --release --locked --features "$features" --bin epa
tests=$("${build[@]}" test --release --locked --features "$features" --test all --no-run --message-format=json \
    | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "all"][-1])')
echo "pack: built in $((SECONDS - t0)) s" >&2
mkdir -p dist
for pair in "target/release/epa:epa" "$tests:epa-tests"; do
    src=${pair%%:*}; name=${pair##*:}
    strip -o "dist/$name" "$src"
    xz -T0 -6 -f -k "dist/$name"
    rm "dist/$name"
    echo "pack: dist/$name.xz $(du -h "dist/$name.xz" | cut -f1) (stripped: $(xz -l --robot "dist/$name.xz" | awk '/^totals/ {printf "%.0f MiB", $5/1048576}'))" >&2
done
du -ch dist/*.xz scripts tests/fixtures | tail -1 >&2
