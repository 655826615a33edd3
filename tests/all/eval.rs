//! `epa eval` end to end on the tiny fixtures (policy tiny-llama, judge tiny-rm-llama: one tokenizer):
//! the report's structure, determinism, and the exact values when the policy is the reference.

use crate::common::fixture;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const PROMPTS: &str = concat!(
    "{\"prompt\": \"Write one sentence about the sea.\", \"chosen\": \"The sea is calm.\", \"rejected\": \"No.\"}\n",
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}]}\n",
    "{\"prompt\": \"Write one sentence about cats.\"}\n",
);

fn run_eval(dir: &Path, policy: &str, reference: &str, judge: &str, extra: &[&str]) -> (bool, String) {
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(&prompts, PROMPTS).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_epa"));
    cmd.arg("eval").arg("--policy").arg(fixture(policy)).arg("--reference").arg(fixture(reference));
    cmd.arg("--prompts").arg(&prompts).arg("--judge").arg(judge);
    cmd.args(["--samples", "3", "--max-new-tokens", "5", "--seed", "11", "--bootstrap", "200", "--batch", "4"]);
    cmd.args(["--device", &crate::common::spec().to_string()]).args(extra);
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into())
}

fn rm_judge() -> String {
    format!("rm:{}", fixture("tiny-rm-llama").display())
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn interval(v: &Value, side: &str, key: &str) -> (f64, f64, f64) {
    let i = &v["metrics"][side][key];
    let f = |k: &str| i[k].as_f64().unwrap_or_else(|| panic!("metrics.{side}.{key}.{k} missing: {i}"));
    (f("estimate"), f("lo"), f("hi"))
}

#[test]
fn eval_writes_a_complete_report_and_is_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let out1 = d.path().join("a");
    let (ok, err) = run_eval(d.path(), "tiny-llama", "tiny-qwen2", &rm_judge(), &["--out", out1.to_str().unwrap()]);
    assert!(ok, "{err}");
    for f in ["eval.json", "eval.md", "rewards.png"] {
        assert!(out1.join(f).exists(), "{f} missing");
    }
    let png = std::fs::read(out1.join("rewards.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 3_000, "rewards.png is not a drawn PNG");
    let v = read_json(&out1.join("eval.json"));
    for k in [
        "policy",
        "reference",
        "prompts",
        "judge",
        "samples",
        "seed",
        "temperature",
        "top_p",
        "max_new_tokens",
        "chat_template",
        "bootstrap",
        "device",
        "lc_ridge",
        "num_prompts",
    ] {
        assert!(!v["settings"][k].is_null(), "settings.{k} missing");
    }
    let keys = [
        ("policy", vec!["reward", "length", "kl", "kl_per_token"]),
        ("reference", vec!["reward", "length"]),
        ("policy_vs_reference", vec!["win_rate", "length_controlled_win_rate", "reward_difference"]),
    ];
    for (side, ks) in &keys {
        for k in ks {
            let (e, lo, hi) = interval(&v, side, k);
            assert!(e.is_finite() && lo <= e + 1e-12 && e <= hi + 1e-12, "{side}.{k}: {e} [{lo}, {hi}]");
        }
    }
    let (w, _, _) = interval(&v, "policy_vs_reference", "win_rate");
    assert!((0.0..=1.0).contains(&w));
    let pp = v["per_prompt"].as_array().unwrap();
    assert_eq!(pp.len(), 3);
    for p in pp {
        for side in ["policy", "reference"] {
            for k in ["answers", "rewards", "lengths"] {
                assert_eq!(p[side][k].as_array().unwrap().len(), 3, "per_prompt.{side}.{k}");
            }
        }
        for k in ["policy_logp", "reference_logp"] {
            assert_eq!(p[k].as_array().unwrap().len(), 3);
        }
        for k in ["win_rate", "kl", "kl_per_token"] {
            assert!(p[k].as_f64().is_some(), "per_prompt.{k}");
        }
    }
    // Two different random models: the KL estimate is not 0.
    assert!(interval(&v, "policy", "kl").0 != 0.0);
    let md = std::fs::read_to_string(out1.join("eval.md")).unwrap();
    for s in ["| win rate vs reference", "| length-controlled win rate", "| KL", "rewards.png"] {
        assert!(md.contains(s), "eval.md lacks {s:?}");
    }

    let out2 = d.path().join("b");
    let (ok, err) = run_eval(d.path(), "tiny-llama", "tiny-qwen2", &rm_judge(), &["--out", out2.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(out1.join("eval.json")).unwrap(),
        std::fs::read(out2.join("eval.json")).unwrap(),
        "two runs differ"
    );
}

#[test]
fn eval_of_the_reference_against_itself_is_a_tie_at_zero_kl() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("same");
    let (ok, err) = run_eval(d.path(), "tiny-llama", "tiny-llama", &rm_judge(), &["--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v = read_json(&out.join("eval.json"));
    for k in ["win_rate", "length_controlled_win_rate"] {
        assert_eq!(interval(&v, "policy_vs_reference", k), (0.5, 0.5, 0.5), "{k}");
    }
    assert_eq!(interval(&v, "policy_vs_reference", "reward_difference"), (0.0, 0.0, 0.0));
    for k in ["kl", "kl_per_token"] {
        assert_eq!(interval(&v, "policy", k), (0.0, 0.0, 0.0), "{k}");
    }
    assert_eq!(v["metrics"]["policy"]["reward"], v["metrics"]["reference"]["reward"]);
    for p in v["per_prompt"].as_array().unwrap() {
        assert_eq!(p["policy"], p["reference"]);
        assert_eq!(p["policy_logp"], p["reference_logp"]);
    }
}

#[test]
fn eval_gold_judge_needs_topics_and_bad_input_names_the_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o");
    // "Name a colour." has no topic: the gold judge refuses it before sampling, naming the line.
    let (ok, err) = run_eval(d.path(), "tiny-llama", "tiny-llama", "gold", &["--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("prompts.jsonl: line 2") && err.contains("topic"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A causal LM as the judge, a reward model as the policy, a bad judge.
    let (ok, err) =
        run_eval(d.path(), "tiny-llama", "tiny-llama", &format!("rm:{}", fixture("tiny-llama").display()), &[]);
    assert!(!ok && err.contains("score.weight"), "{err}");
    let (ok, err) = run_eval(d.path(), "tiny-rm-llama", "tiny-llama", &rm_judge(), &[]);
    assert!(!ok && err.contains("reward") && err.contains("--policy"), "{err}");
    let (ok, err) = run_eval(d.path(), "tiny-llama", "tiny-llama", "gpt4", &[]);
    assert!(!ok && err.contains("unknown judge"), "{err}");
    assert!(!out.exists(), "nothing is written on failure");
}

#[test]
fn eval_gold_judge_scores_demo_prompts() {
    let d = tempfile::tempdir().unwrap();
    let prompts = d.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"Write one sentence about the sea.\"}\n{\"prompt\": \"Tell me.\", \"topic\": \"cats\"}\n",
    )
    .unwrap();
    let out = d.path().join("g");
    let o = Command::new(env!("CARGO_BIN_EXE_epa"))
        .arg("eval")
        .arg("--policy")
        .arg(fixture("tiny-llama"))
        .arg("--reference")
        .arg(fixture("tiny-qwen2"))
        .arg("--prompts")
        .arg(&prompts)
        .args(["--judge", "gold", "--samples", "2", "--max-new-tokens", "4", "--bootstrap", "50", "--out"])
        .arg(&out)
        .args(["--device", &crate::common::spec().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = read_json(&out.join("eval.json"));
    assert_eq!(v["settings"]["judge"], "gold");
    assert_eq!(v["per_prompt"][0]["topic"], "the sea");
    assert_eq!(v["per_prompt"][1]["topic"], "cats");
    // The random tiny model never names the topic: every gold reward is ≤ −1 (off-topic).
    for p in v["per_prompt"].as_array().unwrap() {
        for r in p["policy"]["rewards"].as_array().unwrap() {
            assert!(r.as_f64().unwrap() <= -1.0 + 1e-9, "{r}");
        }
    }
}
