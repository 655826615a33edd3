//! Sequence-classification reward models against transformers (tests/fixtures/tiny-rm-*, copied from
//! shared/fixtures): the chat template gives the golden ids, and the scores match one row at a time
//! and in one right-padded batch; causal LMs and reward models are told apart with a clear error.

use crate::common::{device, fixture};
use epa::model::load::load_model;
use epa::model::reward::RewardModel;
use epa::text::Message;
use serde_json::Value;

struct Row {
    messages: Vec<Message>,
    ids: Vec<u32>,
    score: f64,
}

fn golden(name: &str) -> Vec<Row> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Row {
            messages: serde_json::from_value(r["messages"].clone()).unwrap(),
            ids: r["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
            score: r["score"].as_f64().unwrap(),
        })
        .collect()
}

const RMS: [&str; 2] = ["tiny-rm-llama", "tiny-rm-qwen2"];

#[test]
fn reward_model_chat_template_gives_the_golden_ids() {
    for name in RMS {
        let rm = RewardModel::load(fixture(name).to_str().unwrap(), &device()).unwrap();
        for (k, r) in golden(name).iter().enumerate() {
            assert_eq!(rm.encode(&r.messages).unwrap(), r.ids, "{name} row {k}");
        }
    }
}

#[test]
fn reward_model_scores_match_transformers_row_by_row() {
    for name in RMS {
        let rm = RewardModel::load(fixture(name).to_str().unwrap(), &device()).unwrap();
        for (k, r) in golden(name).iter().enumerate() {
            let got = rm.score_batch(std::slice::from_ref(&r.ids)).unwrap();
            assert!((got[0] as f64 - r.score).abs() <= 1e-4, "{name} row {k}: {} vs {}", got[0], r.score);
        }
    }
}

#[test]
fn reward_model_scores_match_transformers_in_one_padded_batch() {
    for name in RMS {
        let rm = RewardModel::load(fixture(name).to_str().unwrap(), &device()).unwrap();
        let rows = golden(name);
        let lens: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
        assert!(lens.iter().min() < lens.iter().max(), "{name}: rows of one length would not test padding");
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
        let got = rm.score_batch(&ids).unwrap();
        for (k, (g, r)) in got.iter().zip(&rows).enumerate() {
            assert!((*g as f64 - r.score).abs() <= 1e-4, "{name} row {k} in a batch: {g} vs {}", r.score);
        }
        // From messages, as `epa eval` scores them.
        let msgs: Vec<Vec<Message>> = rows.iter().map(|r| r.messages.clone()).collect();
        let again = rm.score_conversations(&msgs, 3).unwrap();
        for (a, b) in again.iter().zip(&got) {
            assert!((a - b).abs() <= 1e-5);
        }
    }
}

#[test]
fn reward_model_reads_the_last_non_pad_token() {
    let rm = RewardModel::load(fixture("tiny-rm-llama").to_str().unwrap(), &device()).unwrap();
    let pad = rm.pad_id.expect("the fixture has a pad id");
    assert_eq!(rm.read_position(&[5, 6, 7]), 2);
    assert_eq!(rm.read_position(&[5, 6, pad, pad]), 1, "trailing pad ids are skipped, as transformers does");
    assert_eq!(rm.read_position(&[pad]), 0);
    assert!(rm.score_batch(&[vec![]]).unwrap_err().to_string().contains("empty"));
    assert!(rm.score_batch(&[vec![1, 99_999]]).unwrap_err().to_string().contains("vocabulary"));
}

#[test]
fn causal_lm_and_reward_model_are_told_apart() {
    let e = RewardModel::load(fixture("tiny-llama").to_str().unwrap(), &device())
        .err()
        .expect("a causal LM is not a reward model");
    let msg = format!("{e:#}");
    assert!(msg.contains("score.weight") && msg.contains("causal LM") && msg.contains("tiny-llama"), "{msg}");
    let e = load_model(fixture("tiny-rm-qwen2").to_str().unwrap(), &device())
        .err()
        .expect("a reward model is not a causal LM");
    let msg = format!("{e:#}");
    assert!(msg.contains("reward") && msg.contains("--judge rm:"), "{msg}");
    let e = RewardModel::load("tests/fixtures/no-such-folder", &device()).err().unwrap();
    assert!(format!("{e:#}").contains("no such"), "{e:#}");
}

#[test]
fn reward_model_weights_the_config_does_not_use_are_an_error() {
    use epa::model::weights::{HostTensor, WeightMap, build_reward_model};
    let dir = fixture("tiny-rm-llama");
    let cfg = epa::model::ModelConfig::from_hf_file(&dir.join("config.json")).unwrap();
    let mut w = WeightMap::from_hf_folder(&dir).unwrap();
    w.insert(
        "lm_head.weight".into(),
        HostTensor { shape: vec![cfg.vocab_size, cfg.hidden_size], data: vec![0.0; cfg.vocab_size * cfg.hidden_size] },
        &dir,
    );
    let e =
        build_reward_model(&cfg, &mut w, &device()).err().expect("an unused lm_head is an error for a reward model");
    assert!(e.to_string().contains("not used") && e.to_string().contains("lm_head.weight"), "{e}");
}
