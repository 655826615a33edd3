//! TRL's conventions (issue 15): each test takes TRL's or transformers' value as the expected one —
//! token ids from TRL 1.16's own `DPOTrainer` preprocessing and collator (`tests/fixtures/trl/`,
//! made by `scripts/make_trl_fixture.py`), and transformers' documented schedule and decay rules.

use std::path::Path;

use crate::common::fixture;
use crate::train::write_data;
use epa::data::{ChatTemplateUse, DataConfig, GroupStore, OverLength, PreferenceGroup, TruncationConfig};
use epa::text::TextCodec;
use epa::train::TrainConfig;
use serde_json::Value;

fn trl() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("trl/tokenized.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The case's rows as epa groups (TRL's shape: prompt / chosen / rejected, strings or messages).
fn groups(case: &Value) -> Vec<PreferenceGroup> {
    case["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let row = serde_json::to_string(r).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("row.jsonl");
            std::fs::write(&path, row).unwrap();
            let cfg = DataConfig { paths: vec![path], ..Default::default() };
            let (mut g, _) = epa::data::load_groups(&cfg).unwrap();
            g.remove(0).1
        })
        .collect()
}

fn store(case: &Value, cfg: &DataConfig) -> GroupStore {
    let codec = TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap();
    let (store, report) = GroupStore::from_groups(&groups(case), cfg, &codec);
    assert_eq!(store.len(), case["rows"].as_array().unwrap().len(), "{}", report.summary());
    store
}

/// Prompt, chosen and rejected ids of group `g` as epa stores them.
fn epa_ids(store: &GroupStore, g: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let group = store.group(g);
    let c: Vec<Vec<u32>> = group.candidates().map(|c| c.ids().to_vec()).collect();
    (group.prompt_ids().to_vec(), c[0].clone(), c[1].clone())
}

#[test]
fn string_prompts_are_tokenised_verbatim_and_message_lists_through_the_template() {
    let t = trl();
    for case in ["string", "conversational"] {
        let store = store(&t[case], &DataConfig::default());
        for (g, row) in t[case]["tokenized"].as_array().unwrap().iter().enumerate() {
            let (p, c, r) = epa_ids(&store, g);
            assert_eq!(p, ids(&row["prompt_ids"]), "{case} row {g}: prompt ids as TRL's");
            assert_eq!(c, ids(&row["chosen_ids"]), "{case} row {g}: chosen ids (EOS appended to strings)");
            assert_eq!(r, ids(&row["rejected_ids"]), "{case} row {g}: rejected ids");
        }
    }
}

#[test]
fn chat_template_always_and_never_switch_the_rule() {
    let t = trl();
    // `always`: a string prompt becomes one user turn, as the conversational row renders.
    let always = DataConfig { chat_template: ChatTemplateUse::Always, ..Default::default() };
    let s = store(&t["string"], &always);
    let conv = &t["conversational"]["tokenized"][0];
    assert_eq!(s.group(0).prompt_ids(), ids(&conv["prompt_ids"]).as_slice());
    // `never`: a message list is a bad row that names its field.
    let codec = TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap();
    let never = DataConfig { chat_template: ChatTemplateUse::Never, ..Default::default() };
    let (store, report) = GroupStore::from_groups(&groups(&t["conversational"]), &never, &codec);
    assert_eq!(store.len(), 0);
    assert!(
        report.problems[0].contains("field `prompt`") && report.problems[0].contains("never"),
        "{:?}",
        report.problems
    );
}

#[test]
fn over_long_sequences_are_cut_keep_start_as_trl_collates_them() {
    let t = trl();
    let case = &t["string_max_length_16"];
    let max = case["max_length"].as_u64().unwrap() as usize;
    let cfg = DataConfig {
        truncation: TruncationConfig { max_length: Some(max), ..Default::default() },
        ..Default::default()
    };
    assert_eq!(cfg.truncation.over_length, OverLength::KeepStart, "TRL's truncation is the default");
    let store = store(case, &cfg);
    for (g, _) in case["rows"].as_array().unwrap().iter().enumerate() {
        let (p, c, r) = epa_ids(&store, g);
        for (ids_epa, side) in [(&c, "chosen"), (&r, "rejected")] {
            let want = &case["collated"][side][g];
            let full: Vec<u32> = [p.as_slice(), ids_epa].concat();
            assert_eq!(full, ids(&want["input_ids"]), "row {g} {side}: prompt + response cut to {max}");
            let mask: Vec<u32> = ids(&want["completion_mask"]);
            assert_eq!(mask.iter().filter(|&&m| m == 1).count(), ids_epa.len(), "row {g} {side}: completion tokens");
        }
    }
    // A prompt that alone fills max_length is dropped, as TRL drops it; `drop` keeps the old rule.
    let tight = DataConfig {
        truncation: TruncationConfig { max_length: Some(15), ..Default::default() },
        ..Default::default()
    };
    let codec = TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap();
    let (s, report) = GroupStore::from_groups(&groups(case), &tight, &codec);
    assert_eq!((s.len(), report.dropped_rows["prompt alone fills max_length"]), (1, 1));
    let drop = DataConfig {
        truncation: TruncationConfig { max_length: Some(max), over_length: OverLength::Drop, ..Default::default() },
        ..Default::default()
    };
    let (s, report) = GroupStore::from_groups(&groups(case), &drop, &codec);
    assert_eq!(s.len(), 0, "{}", report.summary());
    assert_eq!(report.responses_truncated, 0);
}

#[test]
fn warm_up_starts_at_zero_as_transformers_schedules() {
    use epa::train::config::{OptimSection, Schedule};
    // transformers' get_linear_schedule_with_warmup: lr·k/w for k < w, then lr·(T−k)/(T−w).
    let o = OptimSection { lr: 1e-3, warmup_steps: 4, schedule: Schedule::Linear, ..Default::default() };
    let total = 10;
    for k in 0..total {
        let want = if k < 4 { 1e-3 * k as f64 / 4.0 } else { 1e-3 * (total - k) as f64 / (total - 4) as f64 };
        let got = epa::train::optim::learning_rate(&o, k, total);
        assert!((got - want).abs() < 1e-15, "step {k}: {got} vs {want}");
    }
    // get_cosine_schedule_with_warmup (0.5 cycles) after the same warm-up.
    let c = OptimSection { schedule: Schedule::Cosine, ..o };
    let want = 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * 3.0 / 6.0).cos());
    assert!((epa::train::optim::learning_rate(&c, 7, total) - want).abs() < 1e-15);
}

fn train_run(dir: &Path, model: &str, extra: &[&str]) -> Vec<Value> {
    let data = write_data(dir);
    let mut sets: Vec<String> = vec![
        format!("model.path={:?}", fixture(model).display().to_string()),
        format!("data.paths=[{:?}]", data.display().to_string()),
        "data.batch.prompts_per_batch=4".into(),
        "loss.terms=[{name=\"dpo\", beta=0.1}]".into(),
        format!("output.dir={:?}", dir.join("run").display().to_string()),
        format!("reference.cache_dir={:?}", dir.join("cache").display().to_string()),
        "output.progress=false".into(),
        crate::common::device_set(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let cfg = TrainConfig::load(None, &sets).unwrap();
    epa::train::train(&cfg, None).unwrap();
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_first_step_has_rewards_exactly_zero_for_every_reference_mode() {
    for (mode, extra) in [("frozen", vec![]), ("cached", vec![]), ("lora_off", vec!["adapter.method=\"lora\""])] {
        for sharing in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let mode_set = format!("reference.mode={mode:?}");
            let sharing_set = format!("model.prefix_sharing={sharing}");
            let mut sets = vec![
                "optim.max_steps=1",
                "data.weak.k=2",
                "output.export=false",
                mode_set.as_str(),
                sharing_set.as_str(),
            ];
            sets.extend(extra.iter().copied());
            let rows = train_run(d.path(), "tiny-llama", &sets);
            let r = &rows[0];
            for key in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/weak", "rewards/accuracies"] {
                assert_eq!(r[key].as_f64(), Some(0.0), "{mode}, prefix sharing {sharing}: {key} = {}", r[key]);
            }
            assert_eq!(r["loss"].as_f64().unwrap() as f32, std::f32::consts::LN_2, "{mode}: −log σ(0)");
        }
    }
}

#[test]
fn epoch_is_fractional_progress() {
    // 12 prompts, 4 per batch: three batches an epoch (HF: epoch + batches done / batches per epoch).
    let d = tempfile::tempdir().unwrap();
    let rows =
        train_run(d.path(), "tiny-llama", &["optim.max_steps=4", "output.export=false", "reference.mode=\"frozen\""]);
    let epochs: Vec<f64> = rows.iter().map(|r| r["epoch"].as_f64().unwrap()).collect();
    assert_eq!(epochs, [1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0 + 1.0 / 3.0]);
}

#[test]
fn weight_decay_spares_biases_and_norm_weights() {
    // One step from the same weights with and without weight decay: transformers' Trainer decays every
    // weight but no bias and no norm weight (AdamW: p ← p·(1 − lr·wd) − lr·Δ, Δ the same in both runs).
    let (lr, wd) = (1e-2, 0.5);
    let run = |wd: f64| {
        let d = tempfile::tempdir().unwrap();
        let sets = [
            "optim.max_steps=1".to_string(),
            format!("optim.lr={lr}"),
            format!("optim.weight_decay={wd}"),
            "optim.max_grad_norm=0".into(),
            "reference.mode=\"frozen\"".into(),
        ];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        train_run(d.path(), "tiny-qwen2", &sets);
        let bytes = std::fs::read(d.path().join("run/final/model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(n, v)| {
                (n, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<f32>>())
            })
            .collect::<std::collections::BTreeMap<String, Vec<f32>>>()
    };
    let (plain, decayed) = (run(0.0), run(wd));
    let start = {
        let bytes = std::fs::read(fixture("tiny-qwen2/model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(n, v)| {
                (n, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<f32>>())
            })
            .collect::<std::collections::BTreeMap<String, Vec<f32>>>()
    };
    let (mut spared, mut decayed_count) = (0, 0);
    for (name, a) in &plain {
        let b = &decayed[name];
        if name.ends_with(".bias") || name.contains("norm") {
            assert_eq!(a, b, "{name} is not decayed");
            spared += 1;
        } else {
            // a − b = p0·lr·wd.
            let p0 = &start[name];
            let worst =
                a.iter().zip(b).zip(p0).map(|((x, y), p)| ((x - y) - p * (lr * wd) as f32).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "{name}: decay off by {worst}");
            decayed_count += 1;
        }
    }
    // tiny-qwen2: 2 layers × (2 norms + 3 biases) + the final norm; 7 linear weights per layer + the embedding.
    assert_eq!((spared, decayed_count), (11, 15));
}
