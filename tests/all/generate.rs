//! Sampling with shared prefills: the log-prob returned with each sample equals a separate scoring
//! pass, and repeating a prompt (prefilled once, cache shared) changes nothing but the cost.

use epa::model::generate::{SampleConfig, generate, generate_scored};
use epa::model::load::load_model;
use epa::model::{Layout, Rope};
use epa::scores::{Scorer, Targets, host_f32};

fn tiny() -> epa::model::load::LoadedModel {
    load_model(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama"), &crate::common::device()).unwrap()
}

#[test]
fn sample_log_probs_equal_a_scoring_pass() {
    let device = crate::common::device();
    let lm = tiny();
    let rope: &Rope = &lm.rope;
    let prompts = vec![vec![1u32, 40, 41, 42], vec![1u32, 40, 41, 42], vec![1u32, 7, 8], vec![1u32, 40, 41, 42]];
    let cfg = SampleConfig { max_new_tokens: 10, temperature: 1.0, top_p: 0.9, seed: 3, stop_ids: vec![2] };
    let out = generate_scored(&lm.model, rope, &prompts, &cfg, 0, &device);
    let seqs: Vec<Vec<u32>> = prompts.iter().zip(&out).map(|(p, g)| [p.clone(), g.ids.clone()].concat()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<Vec<u8>> =
        prompts.iter().zip(&out).map(|(p, g)| [vec![0u8; p.len()], vec![1u8; g.ids.len()]].concat()).collect();
    let mrefs: Vec<&[u8]> = masks.iter().map(|m| m.as_slice()).collect();
    let layout = Layout::padded(&refs, 0);
    let targets = Targets::padded(&layout, &refs, &mrefs, false);
    let sums = host_f32(Scorer::new(&lm.model, rope, 0, &device).score(&layout, &targets).sums);
    for (g, s) in out.iter().zip(&sums) {
        assert!(!g.ids.is_empty());
        assert!((g.logp - *s as f64).abs() < 1e-4 * (1.0 + s.abs() as f64), "sampled {} vs scored {s}", g.logp);
    }
}

#[test]
fn repeated_prompts_share_a_prefill_without_changing_greedy_answers() {
    let device = crate::common::device();
    let lm = tiny();
    let greedy = SampleConfig { max_new_tokens: 8, ..Default::default() };
    let a = vec![1u32, 40, 41, 42, 43];
    let b = vec![1u32, 7, 8];
    let alone = generate(&lm.model, &lm.rope, &[a.clone(), b.clone()], &greedy, 0, &device);
    let repeated = generate(&lm.model, &lm.rope, &[a.clone(), b.clone(), a.clone(), b, a], &greedy, 0, &device);
    assert_eq!(repeated[0], alone[0]);
    assert_eq!(repeated[2], alone[0]);
    assert_eq!(repeated[4], alone[0]);
    assert_eq!(repeated[1], alone[1]);
    assert_eq!(repeated[3], alone[1]);
}
