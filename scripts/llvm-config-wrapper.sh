#!/bin/bash
# From shared/llvm-config-wrapper.sh (measured recipe, shared/gpu-build.md); installed by scripts/build-cuda.sh.
# Wrapper: Debian's LLVM 22 (apt llvm-22-dev) standing in for tracel's LLVM 23.1.0 bundle.
#  - rewrites absolute library paths in --system-libs (/usr/lib/x86_64-linux-gnu/libz3.so -> -lz3),
#    which tracel-llvm-bundler's norm_lib would otherwise turn into `-l libz3`;
#  - drops -lPolly -lPollyISL (static Polly is in libpolly-22-dev, not installed).
set -o pipefail
/usr/lib/llvm-22/bin/llvm-config "$@" \
  | sed -E 's#(^| )/[^ ]*/lib([A-Za-z0-9_+-]+)\.(so|a)[^ ]*#\1-l\2#g; s#(^| )-lPolly(ISL)?( |$)#\1#g; s#(^| )-lPolly(ISL)?( |$)#\1#g'
