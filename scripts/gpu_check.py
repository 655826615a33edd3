#!/usr/bin/env python3
"""The GPU check (issue 18), one run, JSON out. Runs where there is no Rust toolchain: the `epa`
binary and the integration-test binary (`all`) are built elsewhere (scripts/pack-gpu-check.sh) and
carried here with this script and the fixtures; PyTorch and transformers must be importable for the
baseline and for making the random 0.5B-shaped model.

Stages (each bounded by a timeout; a failed stage is recorded and the others still run):
1. golden   - the golden-fixture tests on the device: per-token log-probs against transformers
              (float32 <= 1e-4, bfloat16 <= 2e-2 relative) and the DPO/EPA loss gradients.
2. agree    - `epa train` on the tiny fixture, 4 EPA steps, float32, on the CPU and on the device:
              every logged metric within 1e-4 relative.
3. train    - a Qwen2.5-0.5B-shaped random model (transformers' init, saved as an HF folder with the
              fixture tokenizer), bfloat16, EPA with weak negatives: the loss goes down; the run split
              in two by a checkpoint and --resume ends with the same weights and metrics, bit for bit.
4. parallel - data parallel in one process (issue 13) on the tiny fixture, 4 EPA steps, float32:
              `--devices D --nccl` (a one-GPU NCCL group: the gradient all-reduce runs through burn's
              NCCL) and `--devices D,D` with 2 prompts each (two ranks as threads, host-memory sum)
              against `--device D` with 4 prompts: every metric within 1e-4 relative; with two or more
              GPUs also `--devices cuda:0,cuda:1 --nccl`.
5. speed    - `epa bench` against bench/pytorch_baseline.py (autocast bf16, sdpa) on the same device,
              Qwen2.5-0.5B shape, 8 prompts x 512 + 512 tokens, DPO and EPA(1+6): tokens/s, MFU
              (6 N tokens/s over 989 TFLOP/s, the dense bf16 peak of an H100/H200 SXM), peak memory.

  python3 scripts/gpu_check.py --device cuda --out gpu-check        # on the GPU machine
  python3 scripts/gpu_check.py --device cpu --quick --out /tmp/dry  # dry run on a CPU machine

`--quick` shrinks the model shapes and batch sizes so a CPU run takes minutes: same code path.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM, dense bf16 tensor cores

TOPICS = ["the sea", "a forest", "the moon", "a city", "winter", "a garden", "the desert", "a river",
          "music", "a library", "the mountains", "a market"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, wgpu or cpu")
    p.add_argument("--epa", default=os.environ.get("EPA_BIN", ""), help="the epa binary")
    p.add_argument("--tests", default=os.environ.get("EPA_TEST_BIN", ""), help="the `all` test binary")
    p.add_argument("--out", default="gpu-check")
    p.add_argument("--quick", action="store_true", help="small shapes (a dry run on a CPU)")
    p.add_argument("--stages", default="golden,agree,parallel,train,speed")
    p.add_argument("--stage-timeout", type=int, default=240, help="seconds per command")
    return p.parse_args()


def find_binary(given, candidates):
    for c in [given] + candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(Path(c).resolve())
    return None


class MemoryPoller:
    """Peak `memory.used` of the GPU from nvidia-smi while a command runs (both tools' caching
    allocators included, so the two are comparable). Does nothing without nvidia-smi."""

    def __init__(self, device):
        self.peak = None
        self.index = device.split(":")[1] if ":" in device else "0"
        self.on = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.stop = threading.Event()

    def __enter__(self):
        if self.on:
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "-i", self.index, "--query-gpu=memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                v = float(out.stdout.strip().splitlines()[0])
                self.peak = v if self.peak is None else max(self.peak, v)
            except Exception:
                pass
            self.stop.wait(0.2)

    def __exit__(self, *exc):
        self.stop.set()
        if self.on:
            self.thread.join(timeout=10)


def run(cmd, timeout, env=None, log=None):
    """Runs a command; returns (ok, seconds, stdout, stderr)."""
    t0 = time.time()
    # Errors read as one message, not a backtrace.
    e = dict(os.environ, RUST_BACKTRACE="0", **(env or {}))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)
        ok, out, err = p.returncode == 0, p.stdout, p.stderr
    except subprocess.TimeoutExpired as x:
        ok, out, err = False, x.stdout or "", (x.stderr or "") + f"\n[timed out after {timeout} s]"
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    secs = time.time() - t0
    if log:
        log.write(f"$ {' '.join(map(str, cmd))}  ({secs:.1f} s, ok={ok})\n{out}\n{err}\n")
        log.flush()
    return ok, secs, out, err


def write_prefs(path):
    with open(path, "w") as f:
        for t in TOPICS:
            f.write(json.dumps({"prompt": f"Describe {t} in one sentence.",
                                "chosen": f"{t} is calm, bright and kind.",
                                "rejected": f"I do not know anything about {t}."}) + "\n")


def metric_rows(run_dir):
    rows = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rows.append(json.loads(line))
    return rows


def train_cmd(epa, model, data, out, steps, device, dtype, extra=(), fresh=True):
    """`epa train` on `device`; `fresh` replaces an earlier run in `out` (a rerun of the check)."""
    sets = [f'model.path="{model}"', f'data.paths=["{data}"]', "data.batch.prompts_per_batch=4",
            "data.weak.k=2", 'loss.terms=[{name="epa", beta=0.5}]', "optim.lr=0.003",
            'optim.schedule="constant"', f"optim.max_steps={steps}", f'output.dir="{out}"',
            f'reference.cache_dir="{out}-cache"', "output.progress=false"] + list(extra)
    cmd = [epa, "train", "--device", device, "--dtype", dtype] + (["--overwrite"] if fresh else [])
    for s in sets:
        cmd += ["--set", s]
    return cmd


# ---------------------------------------------------------------------------------------------
def stage_golden(a, log):
    if not a.tests:
        return {"ok": False, "error": "no test binary (--tests / EPA_TEST_BIN)"}
    ok, secs, out, err = run([a.tests, "golden::", "--nocapture", "--test-threads", "1"], a.stage_timeout,
                             env={"EPA_TEST_DEVICE": a.device, "EPA_REPO_ROOT": str(ROOT)}, log=log)
    text = out + err
    logps = {m.group(1) + " " + m.group(2): float(m.group(3)) for m in
             re.finditer(r"(tiny-\w+) (float32|bfloat16): max \|Δ token_logp\| / max\(1, \|token_logp\|\) = (\S+)", text)}
    grads = {f"{m.group(1)} {m.group(2)} {m.group(3)}": float(m.group(4)) for m in
             re.finditer(r"(tiny-\w+) (DPO|EPA) (float32|bfloat16): worst grad error / max \|grad\| = (\S+)", text)}
    result = re.search(r"test result: (\w+)\. (\d+) passed; (\d+) failed", text)
    return {"ok": ok and bool(result) and result.group(1) == "ok", "seconds": secs,
            "passed": int(result.group(2)) if result else 0, "failed": int(result.group(3)) if result else None,
            "logp_rel_err": logps, "grad_rel_err": grads,
            "tolerances": {"logp": {"float32": 1e-4, "bfloat16": 2e-2}, "grad": {"float32": 1e-4, "bfloat16": 5e-2}}}


def stage_agree(a, log, work):
    data = work / "prefs.jsonl"
    write_prefs(data)
    fixture = ROOT / "tests/fixtures/tiny-llama"
    runs = {}
    for i, dev in enumerate(["cpu", a.device]):
        out = work / f"agree-{i}-{dev.replace(':', '')}"
        ok, secs, _, err = run(train_cmd(a.epa, fixture, data, out, 4, dev, "float32"), a.stage_timeout, log=log)
        if not ok:
            return {"ok": False, "error": f"train on {dev} failed: {err[-2000:]}"}
        runs[dev] = (metric_rows(out), secs)
    (cpu, _), (gpu, _) = runs["cpu"], runs[a.device]
    worst, worst_key = compare_rows(cpu, gpu)
    return {"ok": len(cpu) == len(gpu) == 4 and worst <= 1e-4, "steps": len(gpu), "worst_rel_diff": worst,
            "worst_at": worst_key, "tolerance": 1e-4, "seconds": {d: s for d, (_, s) in runs.items()}}


def compare_rows(a_rows, b_rows):
    """Worst relative difference over every logged metric (timings aside) and where."""
    worst, at = 0.0, None
    for x, y in zip(a_rows, b_rows):
        for k, v in x.items():
            if k in ("tokens_per_s", "step") or not isinstance(v, (int, float)) or k not in y:
                continue
            rel = abs(v - y[k]) / max(abs(v), 1e-6)
            if rel > worst:
                worst, at = rel, f"step {x['step']} {k}"
    return worst, at


def stage_parallel(a, log, work):
    data = work / "prefs.jsonl"
    write_prefs(data)
    fixture = ROOT / "tests/fixtures/tiny-llama"
    gpus = 0
    if shutil.which("nvidia-smi"):
        gpus = len(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines())
    variants = {"single": (["--device", a.device], 4)}
    if a.device.startswith("cuda"):
        variants["nccl-1gpu"] = (["--devices", a.device, "--nccl"], 4)
    variants["threads-2x"] = (["--devices", f"{a.device},{a.device}"], 2)
    if gpus >= 2:
        variants["nccl-2gpu"] = (["--devices", "cuda:0,cuda:1", "--nccl"], 2)
    rows, result = {}, {"gpus": gpus}
    for name, (flags, prompts) in variants.items():
        out = work / f"parallel-{name}"
        cmd = train_cmd(a.epa, fixture, data, out, 4, a.device, "float32", [f"data.batch.prompts_per_batch={prompts}"])
        i = cmd.index("--device")
        cmd = cmd[:i] + flags + cmd[i + 2:]
        ok, secs, _, err = run(cmd, a.stage_timeout, log=log)
        if not ok:
            result[name] = {"ok": False, "error": err[-2000:]}
            continue
        rows[name] = metric_rows(out)
        result[name] = {"ok": True, "seconds": round(secs, 1)}
    for name in rows:
        if name != "single" and "single" in rows:
            worst, at = compare_rows(rows["single"], rows[name])
            result[name].update({"worst_rel_diff": worst, "worst_at": at, "steps": len(rows[name])})
            result[name]["ok"] = len(rows[name]) == 4 and worst <= 1e-4
    result["ok"] = all(v.get("ok") for v in result.values() if isinstance(v, dict))
    result["tolerance"] = 1e-4
    return result


def make_random_model(folder, quick):
    """An HF folder: Qwen2.5-0.5B's shape (or a small Qwen2 with --quick), random init, float32,
    with the tiny fixture's tokenizer (its ids are all below the model's vocabulary)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if quick:
        cfg = Qwen2Config(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    else:
        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6,
                          rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=True)
    cfg.pad_token_id = 0
    model = Qwen2ForCausalLM(cfg).float()
    model.save_pretrained(folder, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        src = ROOT / "tests/fixtures/tiny-llama" / f
        if src.exists():
            shutil.copy(src, Path(folder) / f)
    return sum(p.numel() for p in model.parameters())


def stage_train(a, log, work):
    data = work / "prefs.jsonl"
    write_prefs(data)
    folder = work / "qwen2-random"
    t0 = time.time()
    params = make_random_model(folder, a.quick)
    made = time.time() - t0
    dtype = "bfloat16" if a.device != "wgpu" else "float32"
    # Four epochs of the 12 prompts (3 batches each): the last epoch's loss is compared with the first.
    # A random-init model learns the preference quickly; 1e-4 is a sane AdamW rate at 0.5B.
    steps = 12
    lr = [f"optim.lr={1e-3 if a.quick else 1e-4}"]
    straight, split = work / "train-straight", work / "train-split"
    # A frozen reference: a cached one is computed in other batches by a resumed run than by a straight
    # one, and on a GPU a log-prob's last bits depend on its batch's padded shape (tests/all/train.rs).
    frozen = ['reference.mode="frozen"'] + lr
    with MemoryPoller(a.device) as mem:
        ok, secs, _, err = run(train_cmd(a.epa, folder, data, straight, steps, a.device, dtype, frozen), a.stage_timeout * 2, log=log)
    if not ok:
        return {"ok": False, "error": f"training failed: {err[-2000:]}", "params": params}
    rows = metric_rows(straight)
    loss = [r["loss"] for r in rows if "loss" in r]
    ok1, _, _, err1 = run(train_cmd(a.epa, folder, data, split, steps // 2, a.device, dtype, frozen), a.stage_timeout * 2, log=log)
    # Resumed with more steps than the first half ran: a config change epa asks to confirm.
    ok2, _, _, err2 = run(train_cmd(a.epa, folder, data, split, steps, a.device, dtype, frozen, fresh=False)
                          + ["--resume", str(split), "--allow-config-change"],
                          a.stage_timeout * 2, log=log)
    if not (ok1 and ok2):
        return {"ok": False, "error": f"split run failed: {(err1 + err2)[-2000:]}", "params": params}
    same_weights = (straight / "final/model.safetensors").read_bytes() == (split / "final/model.safetensors").read_bytes()
    resumed = metric_rows(split)
    same_metrics = [(x.get("loss"), x.get("grad_norm")) for x in rows] == [(y.get("loss"), y.get("grad_norm")) for y in resumed]
    down = len(loss) == steps and statistics.mean(loss[-3:]) < statistics.mean(loss[:3])
    return {"ok": down and same_weights and same_metrics, "params": params, "dtype": dtype, "steps": len(loss),
            "loss_first": loss[:3], "loss_last": loss[-3:], "loss_went_down": down,
            "resume_same_weights": same_weights, "resume_same_metrics": same_metrics,
            "seconds": secs, "model_made_seconds": made, "peak_gpu_mib": mem.peak}


def stage_speed(a, log, work):
    if a.quick:
        shape = ["--shape", "tiny", "--prompts", "2", "--prompt-len", "16", "--response-len", "16"]
        py_shape = ["--shape", "tiny", "--prompts", "2", "--prompt-len", "16", "--response-len", "16"]
    else:
        shape = ["--shape", "qwen2.5-0.5b", "--prompts", "8", "--prompt-len", "512", "--response-len", "512"]
        py_shape = shape
    dtype = "bfloat16" if a.device not in ("wgpu",) else "float32"
    reps = ["--reps", "3", "--warmup", "1", "--gen-tokens", "0"]
    result = {"shape": shape, "dtype": dtype, "rows": {}}
    for row in ["dpo", "epa1+6"]:
        entry = {}
        # epa: prefix sharing (the prompt once per group), the way epa trains by default.
        js = work / f"epa-{row}.json"
        with MemoryPoller(a.device) as mem:
            ok, secs, _, err = run([a.epa, "bench", "--device", a.device, "--dtype", dtype, "--rows", row,
                                    "--layouts", "shared", "--no-reference", "--json", str(js)] + shape + reps,
                                   a.stage_timeout, log=log)
        if ok:
            r = json.loads(js.read_text())["rows"][0]
            entry["epa"] = {"step_s": r["step_s"], "tokens_per_s": r["step_tokens_per_s"],
                            "useful_tokens": r["useful_tokens"], "params": json.loads(js.read_text())["model"]["params"],
                            "peak_gpu_mib": mem.peak, "pool_reserved_mib": r.get("peak_device_mib"), "seconds": secs}
        else:
            entry["epa"] = {"error": err[-1500:]}
        # PyTorch: every candidate a full sequence (TRL's way), autocast bf16, sdpa attention.
        js = work / f"pytorch-{row}.json"
        threads = str(os.cpu_count() or 2)
        with MemoryPoller(a.device) as mem:
            ok, secs, _, err = run([sys.executable, str(ROOT / "bench/pytorch_baseline.py"), "--device",
                                    a.device if a.device.startswith("cuda") else "cpu", "--dtype", dtype,
                                    "--attn", "sdpa", "--rows", row, "--threads", threads, "--json", str(js)]
                                   + py_shape + reps, a.stage_timeout, log=log)
        if ok:
            r = json.loads(js.read_text())["rows"][0]
            entry["pytorch"] = {"step_s": r["step_s"], "tokens_per_s": r["step_tokens_per_s"],
                                "useful_tokens": r["useful_tokens"], "params": r["params"],
                                "peak_gpu_mib": mem.peak, "torch_max_allocated_mib": r.get("peak_gpu_mib"), "seconds": secs}
        else:
            oom = "out of memory" in err.lower()
            entry["pytorch"] = {"error": "CUDA out of memory" if oom else err[-1500:]}
        for tool in ("epa", "pytorch"):
            e = entry[tool]
            if "tokens_per_s" in e:
                e["mfu"] = 6 * e["params"] * e["tokens_per_s"] / PEAK_BF16_FLOPS
        if "tokens_per_s" in entry["epa"] and "tokens_per_s" in entry["pytorch"]:
            entry["epa_over_pytorch_tokens_per_s"] = entry["epa"]["tokens_per_s"] / entry["pytorch"]["tokens_per_s"]
        result["rows"][row] = entry
    result["ok"] = all("tokens_per_s" in e.get("epa", {}) for e in result["rows"].values())
    result["targets"] = {"dpo": 1.3, "epa1+6": 2.0, "mfu": 0.35}
    return result


def main():
    a = parse_args()
    a.epa = find_binary(a.epa, [str(ROOT / "dist/epa"), str(ROOT / "target/release/epa")])
    a.tests = find_binary(a.tests, [str(ROOT / "dist/epa-tests")])
    if not a.epa:
        sys.exit("no epa binary: pass --epa PATH or set EPA_BIN (scripts/pack-gpu-check.sh builds one)")
    out = Path(a.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.txt", "w")
    report = {"device": a.device, "quick": a.quick, "epa": a.epa, "tests": a.tests, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if shutil.which("nvidia-smi"):
        report["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                       capture_output=True, text=True).stdout.strip()
    try:
        import torch
        import transformers
        report["torch"], report["transformers"] = torch.__version__, transformers.__version__
    except ImportError as e:
        report["python_error"] = str(e)
    t0 = time.time()
    stages = {"golden": lambda: stage_golden(a, log), "agree": lambda: stage_agree(a, log, work),
              "parallel": lambda: stage_parallel(a, log, work),
              "train": lambda: stage_train(a, log, work), "speed": lambda: stage_speed(a, log, work)}
    for name in a.stages.split(","):
        s0 = time.time()
        try:
            report[name] = stages[name]()
        except Exception as e:  # a stage that breaks is a result too
            report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        report[name]["stage_seconds"] = round(time.time() - s0, 1)
        print(f"{name}: {'ok' if report[name].get('ok') else 'FAILED'} ({report[name]['stage_seconds']} s)", file=sys.stderr)
        (out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    report["seconds"] = round(time.time() - t0, 1)
    report["ok"] = all(report[n].get("ok") for n in a.stages.split(","))
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
