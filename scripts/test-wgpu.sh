#!/usr/bin/env bash
# The bounded test set that runs on burn's GPU code path (`--device wgpu`): golden log-probs and
# gradients against transformers, scoring through the CLI, training with a cached reference and a
# bit-exact resume. On a machine without a GPU, wgpu runs on Mesa's llvmpipe; the `wgpu-unfused`
# feature (no fusion, no autotune) keeps its shader compiles to seconds (see Cargo.toml).
#
#   scripts/test-wgpu.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export EPA_TEST_DEVICE=wgpu
exec cargo test --locked --features wgpu-unfused --test all "$@" -- \
    golden:: \
    cli_score::score_cli_matches_golden_per_token \
    train::resume_is_bit_exact \
    train::cached_reference_equals_frozen_and_is_reused
