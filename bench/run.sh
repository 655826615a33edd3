#!/usr/bin/env bash
# Runs the PyTorch baseline and `epa bench` on the same shapes, one after the other on this machine,
# and prints epa's speed-up over PyTorch per shape. See bench/README.md.
#
#   bench/run.sh                         # DPO and EPA(1+2), 1 warm-up + median of 3 timed steps each (~15 min on 2 cores)
#   bench/run.sh --rows all --reps 3     # every row, median of 3
#   bench/run.sh --tiny                  # 2-layer model: checks the plumbing in a minute
#
# Environment: EPA (the epa binary; default: build target/release/epa), BENCH_VENV (a Python venv
# to use instead of creating bench/.venv), TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu
# for the small CPU-only torch wheel; default: PyPI), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"
THREADS="${THREADS:-2}"

VENV="${BENCH_VENV:-bench/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV (torch CPU + transformers from PyPI)…" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$VENV/bin/pip" install --quiet torch --index-url "$TORCH_INDEX_URL"
  else
    "$VENV/bin/pip" install --quiet torch
  fi
  "$VENV/bin/pip" install --quiet transformers
fi

if [ -z "${EPA:-}" ]; then
  cargo build --release --bin epa >&2
  EPA=target/release/epa
fi

# Medians of 3 timed steps unless --reps is given, after one untimed warm-up step unless --warmup is
# given (a process's first steps fault in fresh memory: they measure start-up, not training).
case " $* " in *" --reps "*|*" --reps="*) ;; *) set -- --reps 3 "$@" ;; esac
case " $* " in *" --warmup "*|*" --warmup="*) ;; *) set -- --warmup 1 "$@" ;; esac

echo "== PyTorch ($VENV)" >&2
"$VENV/bin/python" bench/pytorch_baseline.py --threads "$THREADS" --json "$OUT/pytorch.json" "$@"
echo "== epa ($EPA)" >&2
RAYON_NUM_THREADS="$THREADS" "$EPA" bench --json "$OUT/epa.json" "$@"
"$VENV/bin/python" bench/compare.py "$OUT/epa.json" "$OUT/pytorch.json" | tee "$OUT/compare.txt"
