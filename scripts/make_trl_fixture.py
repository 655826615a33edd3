import json, sys, tempfile
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

fx = sys.argv[1]
tok = AutoTokenizer.from_pretrained(fx)
model = AutoModelForCausalLM.from_pretrained(fx)
rows = [
    {"prompt": "Describe the sea in one sentence.", "chosen": " The sea is calm and bright.", "rejected": " I do not know."},
    {"prompt": "Name a colour", "chosen": ": blue", "rejected": ": a long answer that goes on and on and on about many colours"},
]
conv = [
    {"prompt": [{"role": "user", "content": "Describe the sea in one sentence."}],
     "chosen": [{"role": "assistant", "content": "The sea is calm and bright."}],
     "rejected": [{"role": "assistant", "content": "I do not know."}]},
]
out = {"note": "TRL %s DPOTrainer preprocessing on tests/fixtures/tiny-llama (scripts/make_trl_fixture.py)" % __import__("trl").__version__}
for name, data, max_length in [("string", rows, 1024), ("conversational", conv, 1024), ("string_max_length_16", rows, 16)]:
    args = DPOConfig(output_dir=tempfile.mkdtemp(), max_length=max_length, report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False)
    tr = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
    ds = tr.train_dataset
    ex = [{k: ds[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(ds))]
    batch = tr.data_collator([dict(e) for e in ex])
    n = len(ex)
    seqs = []
    for i in range(2 * n):
        m = batch["attention_mask"][i].tolist()
        L = sum(m)
        seqs.append({"input_ids": batch["input_ids"][i][:L].tolist(), "completion_mask": batch["completion_mask"][i][:L].tolist()})
    out[name] = {"rows": data, "max_length": max_length, "tokenized": ex, "collated": {"chosen": seqs[:n], "rejected": seqs[n:]}}
print(json.dumps(out, indent=1))
