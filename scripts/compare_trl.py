#!/usr/bin/env python3
"""Trains tiny-llama with TRL's DPOTrainer and with `epa train` on the same rows and settings, then prints
both logs step by step: python scripts/compare_trl.py EPA_BINARY OUT_DIR

The settings exercise the conventions epa takes from TRL: plain-string prompts (tokenised verbatim),
keep_start truncation (max_length 24 cuts some answers), linear warm-up (step 1 has lr 0), weight decay
(not on norm weights), step-1 rewards of exactly 0, fractional epoch. One batch holds every row, so
the data order (TRL's sampler vs epa's shuffle) does not matter."""
import json, os, subprocess, sys
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

epa, out = sys.argv[1], sys.argv[2]
fx = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tiny-llama")
topics = ["the sea", "a forest", "the moon", "a city", "winter", "a garden", "the desert", "a river"]
rows = [{"prompt": f"Describe {t} in one sentence.", "chosen": f" {t} is calm, bright and kind.",
         "rejected": f" I do not know anything at all about {t}, sorry."} for t in topics]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "prefs.jsonl"), "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
steps, lr, wd, warmup, max_length = 6, 1e-3, 0.1, 2, 24

args = DPOConfig(output_dir=os.path.join(out, "trl"), per_device_train_batch_size=len(rows), max_steps=steps,
                 learning_rate=lr, weight_decay=wd, warmup_steps=warmup, lr_scheduler_type="linear",
                 max_length=max_length, beta=0.1, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                 gradient_checkpointing=False, save_strategy="no", seed=0, max_grad_norm=1.0)
tok = AutoTokenizer.from_pretrained(fx)
trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(fx), args=args,
                     train_dataset=Dataset.from_list(rows), processing_class=tok)
trainer.train()
trl_rows = [h for h in trainer.state.log_history if "loss" in h]

cmd = [epa, "train", "--overwrite",
       "--set", f'model.path="{fx}"', "--set", f'data.paths=["{out}/prefs.jsonl"]',
       "--set", f"data.batch.prompts_per_batch={len(rows)}", "--set", "data.weak.k=0",
       "--set", f"data.truncation.max_length={max_length}",
       "--set", 'loss.terms=[{name="dpo", beta=0.1}]', "--set", 'reference.mode="frozen"',
       "--set", f"optim.lr={lr}", "--set", f"optim.weight_decay={wd}", "--set", f"optim.warmup_steps={warmup}",
       "--set", f"optim.max_steps={steps}", "--set", f'output.dir="{out}/epa"', "--set", "output.export=false",
       "--set", "output.progress=false"]
subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
epa_rows = [json.loads(l) for l in open(os.path.join(out, "epa", "metrics.jsonl"))]
keys = ["loss", "learning_rate", "epoch", "rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "grad_norm"]
worst = {}
for t, e in zip(trl_rows, epa_rows):
    print(f"step {e['step']}")
    for k in keys:
        a, b = t.get(k), e.get(k)
        if a is None or b is None:
            continue
        rel = abs(a - b) / max(abs(a), 1e-12) if a != b else 0.0
        worst[k] = max(worst.get(k, 0.0), rel if abs(a) > 1e-9 else abs(a - b))
        print(f"  {k:20s} trl {a: .8g}  epa {b: .8g}")
print("worst relative difference per metric (absolute where TRL's value is 0):")
for k, v in worst.items():
    print(f"  {k:20s} {v:.2e}")
