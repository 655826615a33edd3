#!/usr/bin/env bash
# Data-parallel scaling on one CPU machine: 1 rank × 2 threads (4 prompts per batch) against
# 2 MPI ranks × 1 thread (2 prompts each, the same global batch) and against 2 ranks as threads of
# one process (`--devices cpu,cpu`, 2 prompts each, one shared pool of 2 threads); SmolLM2-135M full fine-tune, DPO,
# frozen reference, 6 steps on 64 synthetic rows (30-word prompts, 90-word answers), `reps` times
# alternating. Prints tokens/s per step (metrics.jsonl) and wall time / peak RSS (GNU time).
#
#   bench/mpi-scaling.sh [path/to/epa built with --features mpi] [reps]
set -euo pipefail
E=$(realpath "${1:-target/debug/epa}")
reps=${2:-2}
w=$(mktemp -d)
cd "$w"
python3 - <<'PY'
import json, random
random.seed(0)
words = "the sea forest moon city winter garden desert river music library mountain market light stone wind bright calm slow quiet old new warm cold green blue deep wide small".split()
def sent(n): return " ".join(random.choice(words) for _ in range(n)).capitalize() + "."
with open("prefs.jsonl", "w") as f:
    for i in range(64):
        f.write(json.dumps({"prompt": "Describe this scene in a few sentences: " + sent(30), "chosen": sent(90), "rejected": sent(90)}) + "\n")
PY
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
c=(--set 'model.path="smollm2"' --set 'data.paths=["prefs.jsonl"]' --set 'loss.terms=[{name="dpo",beta=0.1}]'
   --set optim.max_steps=6 --set output.progress=false --set output.export=false --set output.final_checkpoint=false
   --set 'reference.mode="frozen"' --set optim.lr=1e-6 --set output.overwrite=true)
steps() { python3 -c "import json,statistics as s,sys;r=[json.loads(l)['tokens_per_s'] for l in open(sys.argv[1]+'/metrics.jsonl')];print(sys.argv[2], 'tokens/s per step', [round(x) for x in r], 'median of steps 2-6', round(s.median(r[1:])))" "$@"; }
grep -m1 "model name" /proc/cpuinfo; nproc
for rep in $(seq "$reps"); do
    /usr/bin/time -f "wall %e s, peak RSS %M KiB (one process)" env RAYON_NUM_THREADS=2 "$E" train "${c[@]}" \
        --set data.batch.prompts_per_batch=4 --set 'output.dir="one"' > /dev/null 2> one.err
    tail -1 one.err; steps one "1 rank × 2 threads:"
    /usr/bin/time -f "wall %e s, peak RSS %M KiB (the largest rank)" mpirun -np 2 --oversubscribe -x RAYON_NUM_THREADS=1 "$E" train "${c[@]}" \
        --set data.batch.prompts_per_batch=2 --set 'output.dir="two"' > /dev/null 2> two.err
    tail -1 two.err; steps two "2 ranks × 1 thread:"
    /usr/bin/time -f "wall %e s, peak RSS %M KiB (the process)" env RAYON_NUM_THREADS=2 "$E" train "${c[@]}" --devices cpu,cpu \
        --set data.batch.prompts_per_batch=2 --set 'output.dir="threads"' > /dev/null 2> threads.err
    tail -1 threads.err; steps threads "2 ranks as threads (--devices cpu,cpu):"
done
rm -rf "$w"
