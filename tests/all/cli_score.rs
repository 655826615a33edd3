//! `epa score` end to end: golden per-token log-probs through the command line, both input
//! forms, input order kept, and errors naming the line.

use crate::common::fixture;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn run_score(model: &PathBuf, input: &str, per_token: bool) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.jsonl");
    std::fs::write(&data, input).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_epa"));
    cmd.args(["score", "--model"]).arg(model).arg("--data").arg(&data).args(["--batch-size", "5"]);
    cmd.args(["--device", &crate::common::spec().to_string()]);
    if per_token {
        cmd.arg("--per-token");
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn score_cli_matches_golden_per_token() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let g: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
        let seqs = g["sequences"].as_array().unwrap();
        let input: String = seqs
            .iter()
            .map(|s| {
                serde_json::json!({"input_ids": s["input_ids"], "completion_mask": s["completion_mask"]}).to_string()
                    + "\n"
            })
            .collect();
        let (ok, stdout, stderr) = run_score(&fixture(name), &input, true);
        assert!(ok, "{stderr}");
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), seqs.len());
        for (s, (want, got)) in seqs.iter().zip(&lines).enumerate() {
            let w = want["token_logps"].as_array().unwrap();
            let o = got["token_logps"].as_array().unwrap();
            assert_eq!(w.len(), o.len());
            for (a, b) in w.iter().zip(o) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() <= 1e-4, "{name} seq {s}");
            }
            let sum = want["completion_logp_sum"].as_f64().unwrap();
            assert!((got["logp_sum"].as_f64().unwrap() - sum).abs() < 1e-3, "{name} seq {s}");
            let n = want["completion_mask"].as_array().unwrap()[1..].iter().filter(|x| x.as_u64() == Some(1)).count();
            assert_eq!(got["n_tokens"].as_u64().unwrap() as usize, n);
        }
    }
}

#[test]
fn score_cli_prompt_response_form_equals_ids_form() {
    // The golden sequences were rendered with the chat template from (prompt, response) pairs:
    // the string form must give the same ids, hence the same sums.
    let name = "tiny-llama";
    let g: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
    let seqs = g["sequences"].as_array().unwrap();
    let texts: Vec<(String, String)> = seqs
        .iter()
        .map(|s| {
            // The user message is inside the rendered text; the response string is given.
            let text = s["text"].as_str().unwrap();
            let user = text.split("<|im_start|>user\n").nth(1).unwrap().split("<|im_end|>").next().unwrap();
            (user.to_string(), s["response"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(texts.len(), seqs.len());
    let input: String = texts
        .iter()
        .map(|(p, r)| serde_json::json!({"prompt": [{"role": "user", "content": p}], "response": r}).to_string() + "\n")
        .collect();
    let (ok, stdout, stderr) = run_score(&fixture(name), &input, false);
    assert!(ok, "{stderr}");
    let got: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (s, o) in seqs.iter().zip(&got) {
        let want = s["completion_logp_sum"].as_f64().unwrap();
        assert!((o["logp_sum"].as_f64().unwrap() - want).abs() < 1e-3, "{} vs {want}", o["logp_sum"]);
    }
}

#[test]
fn score_cli_bad_input_names_the_line_and_field() {
    let model = fixture("tiny-llama");
    let good = r#"{"input_ids": [1, 5, 6], "completion_mask": [0, 1, 1]}"#;
    for (input, needle) in [
        (format!("{good}\n{{oops\n"), ":2"),
        (format!("{good}\n{good}\n{{\"input_ids\": [1, 2]}}\n"), "completion_mask"),
        ("{\"input_ids\": [1, 2, 9999], \"completion_mask\": [0, 1, 1]}\n".to_string(), "vocabulary"),
        ("{\"prompt\": \"hi\"}\n".to_string(), "response"),
        ("{\"input_ids\": [1, 2], \"completion_mask\": [0]}\n".to_string(), "completion_mask"),
    ] {
        let (ok, _, stderr) = run_score(&model, &input, false);
        assert!(!ok, "should fail on {input}");
        assert!(stderr.contains(needle) && stderr.contains("in.jsonl"), "stderr for {input:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
