#!/usr/bin/env python3
"""PyTorch + transformers baseline for `epa bench` (issue 8): the same model shape, the same batch
shapes, the same losses, done the usual PyTorch/TRL way.

* Model: transformers' LlamaForCausalLM with SmolLM2-135M's config, random init, float32, CPU,
  `torch.set_num_threads(--threads)` (2 by default, the cores of the CI machine).
* Batch: P prompts x prompt_len tokens, C candidates x response_len tokens each. Every candidate is a
  full separate sequence prompt + response (padded, as TRL's DPOTrainer concatenates chosen and
  rejected), logits for every position, log-probs of the completion tokens gathered with TRL's
  `selective_log_softmax` (row-wise logsumexp), summed per sequence.
* Losses: DPO (TRL's `loss_type="sigmoid"`: -logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))))
  and EPA with w = 1 (log(1 + sum_k exp(r_k - r_+)), r = beta * (pi - ref), i.e. a cross-entropy
  with the positive at index 0), beta = 0.1.
* Training step: forward + backward + torch.optim.AdamW step. Reference pass: a second model under
  torch.no_grad(), timed separately. Generation: `model.generate` greedy with the KV cache.
* Each row runs in its own subprocess so that its peak RSS (resource.getrusage ru_maxrss) is its own.
* GPU (`--device cuda`): the same steps on the GPU, timed after torch.cuda.synchronize(), peak GPU
  memory from torch.cuda.max_memory_allocated. `--dtype bfloat16` is torch.autocast(bfloat16) over
  float32 master weights and float32 AdamW state (what `epa --dtype bfloat16` does), logits cast to
  float32 before the log-softmax (as TRL does); `--attn sdpa` is transformers' scaled_dot_product_attention.
* `--shape qwen2.5-0.5b` is Qwen2ForCausalLM with Qwen2.5-0.5B's config (tied embeddings, qkv bias).

Usage:  python bench/pytorch_baseline.py --rows dpo,epa1+2 --reps 1 --json bench/out/pytorch.json
Output: a table on stdout and JSON with the same field names as `epa bench --json`.
"""

import argparse
import json
import re
import os
import resource
import statistics
import subprocess
import sys
import time

ROWS = {"dpo": ("dpo", 0), "epa1+2": ("epa", 2), "epa1+6": ("epa", 6)}
BETA = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--response-len", type=int, default=128)
    p.add_argument("--rows", default="dpo,epa1+2", help="dpo, epa1+2, epa1+6 (comma-separated) or all")
    p.add_argument("--reps", type=int, default=1, help="timed steps per row (median reported)")
    p.add_argument("--warmup", type=int, default=0, help="untimed training steps per row")
    p.add_argument("--gen-tokens", type=int, default=32, help="new tokens per prompt (0 = skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a 2-layer model (quick check; = --shape tiny)")
    p.add_argument("--shape", default="smollm2-135m", choices=["smollm2-135m", "qwen2.5-0.5b", "tiny"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--attn", default=None, choices=["eager", "sdpa"],
                   help="transformers attn_implementation (default: transformers' own choice)")
    p.add_argument("--json", help="write results here")
    p.add_argument("--layouts", help="accepted for `epa bench` compatibility; PyTorch always runs separate sequences")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one row in this process
    return p.parse_args(argv)


def machine():
    """CPU model, and the kernels PyTorch runs on it (its CPU capability and BLAS, from torch.__config__)."""
    import torch
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    show = torch.__config__.show()
    found = re.search(r"BLAS_INFO=([^,\s]+)", show)
    blas = found.group(1) if found else "unknown"
    return dict(cpu=model, cpu_capability=torch.backends.cpu.get_cpu_capability(), blas=blas,
                mkldnn=torch.backends.mkldnn.is_available())


def config(args):
    from transformers import LlamaConfig, Qwen2Config

    shape = "tiny" if args.tiny else args.shape
    if shape == "qwen2.5-0.5b":
        return Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
            max_position_embeddings=32768, tie_word_embeddings=True, eos_token_id=151645,
            pad_token_id=151643, **attn(args),
        )
    tiny = shape == "tiny"
    shape = dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64,
    )
    if tiny:
        shape = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    return LlamaConfig(
        **shape, rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, **attn(args),
    )


def attn(args):
    return {"attn_implementation": args.attn} if args.attn else {}


def model_class(cfg):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    return Qwen2ForCausalLM if cfg.model_type == "qwen2" else LlamaForCausalLM


def sync(args):
    import torch

    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(args):
    import contextlib
    import torch

    if args.dtype == "bfloat16":
        return torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def batch(args, vocab, weak):
    """Token ids [P*C, T], completion mask [P*C, T]; prompt p's candidates are rows p*C .. p*C+C-1:
    positive, one strong negative, then `weak` responses of other prompts."""
    import torch

    g = torch.Generator().manual_seed(0)
    groups = max(args.prompts, 4)
    prompts = torch.randint(3, vocab, (groups, args.prompt_len), generator=g)
    responses = torch.randint(3, vocab, (groups, 2, args.response_len), generator=g)
    seqs = []
    for p in range(args.prompts):
        own = [responses[p, 0], responses[p, 1]]
        others = [responses[(p + k) % groups, j] for k in range(1, groups) for j in range(2)][:weak]
        seqs += [torch.cat([prompts[p], r]) for r in own + others]
    ids = torch.stack(seqs)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, args.prompt_len:] = True
    return ids, mask, 2 + weak


def selective_log_softmax(logits, index):
    """TRL's trl.trainer.utils.selective_log_softmax for float32: gather minus row-wise logsumexp
    (looped over rows to bound memory)."""
    import torch

    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return selected - lse


def sequence_logps(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=(ids >= 0).long()).logits[:, :-1].float()
    labels = ids[:, 1:]
    per_token = selective_log_softmax(logits, labels)
    return (per_token * mask[:, 1:]).sum(-1)


def loss_fn(kind, policy, reference, prompts, cands):
    import torch
    import torch.nn.functional as F

    r = BETA * (policy - reference).view(prompts, cands)
    if kind == "dpo":
        # TRL DPOTrainer, loss_type="sigmoid", label_smoothing=0.
        return -F.logsigmoid(r[:, 0] - r[:, 1]).mean()
    # EPA, w = 1: log(1 + sum_k exp(r_k - r_0)) = cross-entropy with the positive at index 0.
    return F.cross_entropy(r, torch.zeros(prompts, dtype=torch.long, device=r.device))


def run_one(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = args.one
    kind, weak = ROWS[name]
    cfg = config(args)
    cls = model_class(cfg)
    model = cls(cfg).float().train().to(args.device)
    ref = cls(cfg).float().eval().to(args.device)
    ref.load_state_dict(model.state_dict())
    params = sum(p.numel() for p in model.parameters())
    ids, mask, cands = batch(args, cfg.vocab_size, weak)
    ids, mask = ids.to(args.device), mask.to(args.device)
    useful = ids.numel()
    # Untimed warm-up of the thread pool and allocator on a short sequence.
    with torch.no_grad(), autocast(args):
        ref(input_ids=ids[:1, :16])
    sync(args)

    ref_times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(args):
            ref_logps = sequence_logps(ref, ids, mask)
        sync(args)
        ref_times.append(time.perf_counter() - t0)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times, cpu = [], []
    for i in range(args.warmup + args.reps):
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast(args):
            policy = sequence_logps(model, ids, mask)
        loss = loss_fn(kind, policy, ref_logps, args.prompts, cands)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    step = statistics.median(times)
    ref_s = statistics.median(ref_times)
    return dict(
        name=name, loss=kind, candidates=cands, prefix_sharing=False, useful_tokens=useful,
        computed_tokens=useful, step_s=step, step_cpu_s=statistics.median(cpu), step_all_s=times, step_tokens_per_s=useful / step,
        step_gflops=6 * params * useful / step / 1e9, reference_s=ref_s,
        reference_gflops=2 * params * useful / ref_s / 1e9, peak_rss_mib=peak_rss_mib(), params=params,
        peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
    )


def run_generation(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config(args)
    model = model_class(cfg)(cfg).float().eval().to(args.device)
    ids, _, _ = batch(args, cfg.vocab_size, 0)
    prompts = ids[:: 2, : args.prompt_len].contiguous().to(args.device)

    def timed(n):
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(args):
            out = model.generate(
                input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=cfg.pad_token_id,
            )
        sync(args)
        return time.perf_counter() - t0, out.shape[1] - prompts.shape[1]

    timed(1)  # warm-up
    first, _ = timed(1)
    total, made = timed(args.gen_tokens)
    return dict(
        prompts=args.prompts, prompt_len=args.prompt_len, new_tokens=args.gen_tokens,
        first_token_s=first, total_s=total,
        decode_tokens_per_s=args.prompts * (made - 1) / max(total - first, 1e-9),
    )


def child(args, what):
    """Runs one row (or the generation benchmark) in a fresh interpreter; returns its JSON."""
    argv = [sys.executable, os.path.abspath(__file__), "--one", what]
    for k in ("prompts", "prompt_len", "response_len", "reps", "warmup", "gen_tokens", "threads", "shape", "device",
              "dtype", "attn"):
        if getattr(args, k) is not None:
            argv += ["--" + k.replace("_", "-"), str(getattr(args, k))]
    if args.tiny:
        argv.append("--tiny")
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.one:
        result = run_generation(args) if args.one == "generation" else run_one(args)
        print(json.dumps(result))
        return
    import torch
    import transformers

    names = list(ROWS) if args.rows == "all" else [r.strip() for r in args.rows.split(",")]
    for n in names:
        if n not in ROWS:
            sys.exit(f"--rows: unknown row '{n}'; expected one of {', '.join(ROWS)} or all")
    m = machine()
    print(f"machine: {m['cpu']}; torch CPU capability {m['cpu_capability']}, BLAS {m['blas']}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads; "
          f"{args.prompts} prompts x {args.prompt_len} tokens, responses of {args.response_len} tokens")
    rows = []
    for n in names:
        r = child(args, n)
        print(f"{n}: step {r['step_s']:.3f} s, {r['step_cpu_s']:.3f} CPU s, reference {r['reference_s']:.3f} s",
              file=sys.stderr)
        rows.append(r)
    generation = child(args, "generation") if args.gen_tokens > 0 else None
    print(f"{'row':<8} {'cands':>5} {'tokens':>7} {'step s':>9} {'tok/s':>9} {'GFLOP/s':>8} "
          f"{'ref s':>8} {'ref GF/s':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['name']:<8} {r['candidates']:>5} {r['useful_tokens']:>7} {r['step_s']:>9.3f} "
              f"{r['step_tokens_per_s']:>9.1f} {r['step_gflops']:>8.1f} {r['reference_s']:>8.3f} "
              f"{r['reference_gflops']:>8.1f} {r['peak_rss_mib']:>9.0f}")
    if generation:
        print(f"generation: first token {generation['first_token_s']:.3f} s, "
              f"{generation['decode_tokens_per_s']:.1f} new tokens/s after it")
    report = dict(
        tool="pytorch", torch=torch.__version__, transformers=transformers.__version__, machine=machine(),
        threads=args.threads, device=args.device, dtype=args.dtype, attn=args.attn,
        model=dict(shape="tiny" if args.tiny else args.shape),
        shape=dict(prompts=args.prompts, prompt_len=args.prompt_len, response_len=args.response_len, reps=args.reps),
        rows=rows, generation=generation,
    )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
