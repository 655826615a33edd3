#!/usr/bin/env bash
# Builds (or checks) epa with the `cuda` feature without internet access.
#
#   scripts/build-cuda.sh                      # cargo build --release --locked --features cuda --bin epa
#   scripts/build-cuda.sh check --locked --features cuda   # any cargo command instead (CI checks only)
#
# Why: burn 0.22.1's `cuda` pulls in cubecl-llvm, whose build dependency tracel-llvm-bundler downloads
# an LLVM 23 bundle into <data_local_dir>/tracel/tracel-llvm-<version> unless a marker file says it
# is already there, then links it through that folder's bin/llvm-config. Offline, we put Debian's
# LLVM 22 (package llvm-22-dev) behind a small llvm-config wrapper in that folder
# (scripts/llvm-config-wrapper.sh: it turns absolute library paths into -l flags and drops Polly).
# With the `cpp` feature epa enables on cubecl-cuda (Cargo.toml), kernels are compiled by NVRTC at
# run time and the linked LLVM is unused, so LLVM 22 standing in for 23 does not matter at run time.
# With internet access, plain `cargo build --release --features cuda` works as well.
#
# The binary needs the CUDA driver and NVRTC (libcuda, libnvrtc) only at run time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

llvm=/usr/lib/llvm-22/bin/llvm-config
if [ ! -x "$llvm" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build-cuda: installing llvm-22-dev (Debian's LLVM 22)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm-22-dev >/dev/null
    else
        echo "build-cuda: $llvm not found: install Debian's llvm-22-dev (sudo apt-get install llvm-22-dev)" >&2
        exit 1
    fi
fi

# The folder tracel-llvm-bundler looks in: its version comes from Cargo.lock.
version=$(awk '/^name = "tracel-llvm-bundler"/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
[ -n "$version" ] || { echo "build-cuda: tracel-llvm-bundler not in Cargo.lock" >&2; exit 1; }
prefix="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-$version"
mkdir -p "$prefix/bin"
install -m 755 "$here/llvm-config-wrapper.sh" "$prefix/bin/llvm-config"
touch "$prefix/.tracel-llvm-installed"
echo "build-cuda: LLVM $("$prefix/bin/llvm-config" --version) at $prefix stands in for tracel's bundle" >&2

if [ $# -eq 0 ]; then
    set -- build --release --locked --features cuda --bin epa
fi
exec cargo "$@"
