#!/usr/bin/env python3
"""Prints epa's speed-up over PyTorch per shape from `epa bench --json` and
`pytorch_baseline.py --json` outputs: python bench/compare.py epa.json pytorch.json"""
import json
import sys


def main(epa_path, torch_path):
    epa = json.load(open(epa_path))
    torch = json.load(open(torch_path))
    pt = {r["name"]: r for r in torch["rows"]}
    keys = ("prompts", "prompt_len", "response_len")
    if any(epa["shape"][k] != torch["shape"][k] for k in keys):
        print("warning: the two runs used different shapes", file=sys.stderr)
    for name, r in (("epa", epa), ("pytorch", torch)):
        m = r.get("machine", {})
        print(f"{name}: {m.get('cpu', '?')}; {m.get('matmul') or ('BLAS ' + str(m.get('blas')) + ', ' + str(m.get('cpu_capability')))}; {r.get('threads')} threads")
    print(f"{'row':<8} {'epa layout':>10} {'epa step s':>10} {'torch step s':>12} {'speed-up':>8} "
          f"{'CPU-s ratio':>11} {'ref speed-up':>12} {'epa MiB':>8} {'torch MiB':>9}")
    for r in epa["rows"]:
        t = pt.get(r["name"])
        if t is None:
            continue
        layout = "shared" if r["prefix_sharing"] else "separate"
        ref = t["reference_s"] / r["reference_s"] if r["reference_s"] == r["reference_s"] else float("nan")
        cpu = t.get("step_cpu_s", float("nan")) / r.get("step_cpu_s", float("nan"))
        print(f"{r['name']:<8} {layout:>10} {r['step_s']:>10.3f} {t['step_s']:>12.3f} "
              f"{t['step_s'] / r['step_s']:>7.2f}x {cpu:>10.2f}x {ref:>11.2f}x {r['peak_rss_mib']:>8.0f} {t['peak_rss_mib']:>9.0f}")
    eg, tg = epa.get("generation"), torch.get("generation")
    if eg and tg:
        print(f"generation (decode tokens/s): epa {eg['decode_tokens_per_s']:.1f}, torch {tg['decode_tokens_per_s']:.1f}, "
              f"speed-up {eg['decode_tokens_per_s'] / tg['decode_tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main(*sys.argv[1:3])
