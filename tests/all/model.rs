//! Model plumbing: prefix sharing equals separate sequences, save → load round trip, the KV
//! cache equals recomputation, and bad inputs give clear errors.

use crate::common::fixture;
use burn::tensor::Device;
use epa::model::generate::{SampleConfig, generate};
use epa::model::save::{named_params, save_weights};
use epa::model::weights::{WeightMap, build_model};
use epa::model::{CausalLm, Layout, ModelConfig, Rope};
use epa::scores::{Scorer, Targets, host_f32};
use std::path::Path;

fn load(dir: &Path, device: &Device) -> (CausalLm, ModelConfig) {
    let cfg = ModelConfig::from_hf_file(&dir.join("config.json")).unwrap();
    let mut w = WeightMap::from_hf_folder(dir).unwrap();
    (build_model(&cfg, &mut w, device).unwrap(), cfg)
}

fn load_err(dir: &Path) -> String {
    let r = (|| -> anyhow::Result<()> {
        let cfg = ModelConfig::from_hf_file(&dir.join("config.json"))?;
        let mut w = WeightMap::from_hf_folder(dir)?;
        build_model(&cfg, &mut w, &crate::common::device())?;
        Ok(())
    })();
    format!("{:#}", r.expect_err("loading should fail"))
}

/// A prompt with three responses of different lengths.
fn group() -> (Vec<u32>, Vec<Vec<u32>>) {
    (vec![1, 40, 41, 42, 43, 2, 1], vec![vec![50, 51, 52, 2], vec![60, 61], vec![70, 71, 72, 73, 74, 2]])
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn shared_prefix_equals_separate_sequences_logps_and_grads() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let device = crate::common::device().autodiff();
        let (model, cfg) = load(&fixture(name), &device);
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        let (prompt, responses) = group();
        // Two groups in one batch (the second shorter) so padding of shared rows is exercised.
        let groups: Vec<(&[u32], Vec<&[u32]>)> =
            vec![(&prompt, responses.iter().map(|r| r.as_slice()).collect()), (&prompt[..4], vec![&responses[1][..]])];
        let shared = Layout::shared_prefix(&groups, 0);
        let st = Targets::shared_prefix(&shared, &groups);
        let s_sums = Scorer::new(&model, &rope, 0, &device).score(&shared, &st).sums;

        let full: Vec<Vec<u32>> = groups.iter().flat_map(|(p, rs)| rs.iter().map(move |r| [*p, *r].concat())).collect();
        let masks: Vec<Vec<u8>> = groups
            .iter()
            .flat_map(|(p, rs)| rs.iter().map(move |r| [vec![0u8; p.len()], vec![1u8; r.len()]].concat()))
            .collect();
        let seqs: Vec<&[u32]> = full.iter().map(|s| s.as_slice()).collect();
        let ms: Vec<&[u8]> = masks.iter().map(|s| s.as_slice()).collect();
        let plain = Layout::padded(&seqs, 0);
        let pt = Targets::padded(&plain, &seqs, &ms, false);
        let p_sums = Scorer::new(&model, &rope, 0, &device).score(&plain, &pt).sums;

        let a = host_f32(s_sums.clone());
        let b = host_f32(p_sums.clone());
        assert!(max_abs_diff(&a, &b) < 1e-5, "{name}: shared {a:?} vs separate {b:?}");

        // Gradients of a weighted sum of the scores, w.r.t. every parameter.
        let weights = burn::tensor::Tensor::<1>::from_floats([0.3, -1.2, 0.7, 2.0], &device);
        let ga = (s_sums * weights.clone()).sum().backward();
        let gb = (p_sums * weights).sum().backward();
        for (pname, t) in named_params(&model) {
            let x = t.map(|v| v.grad(&ga), |v| v.grad(&ga)).unwrap().to_hf_host().1;
            let y = t.map(|v| v.grad(&gb), |v| v.grad(&gb)).unwrap().to_hf_host().1;
            let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let d = max_abs_diff(&x, &y);
            assert!(d <= 1e-5 * scale.max(1.0), "{name} {pname}: grad differs by {d:e} (max |g| {scale:e})");
        }
    }
}

#[test]
fn save_then_load_gives_identical_logps() {
    let device = crate::common::device();
    for name in ["tiny-llama", "tiny-qwen2"] {
        let (model, cfg) = load(&fixture(name), &device);
        let dir = tempfile::tempdir().unwrap();
        save_weights(&model, &cfg, dir.path()).unwrap();
        let (again, cfg2) = load(dir.path(), &device);
        assert_eq!(cfg, cfg2, "{name}: config changed in the round trip");
        let (p, rs) = group();
        let seqs: Vec<Vec<u32>> = rs.iter().map(|r| [p.clone(), r.clone()].concat()).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let ones: Vec<Vec<u8>> = seqs.iter().map(|s| vec![1; s.len()]).collect();
        let ms: Vec<&[u8]> = ones.iter().map(|s| s.as_slice()).collect();
        let layout = Layout::padded(&refs, 0);
        let t = Targets::padded(&layout, &refs, &ms, true);
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        let a = host_f32(Scorer::new(&model, &rope, 0, &device).score(&layout, &t).token_logps);
        let b = host_f32(Scorer::new(&again, &rope, 0, &device).score(&layout, &t).token_logps);
        assert_eq!(a, b, "{name}: log-probs changed after save → load");
    }
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let device = crate::common::device();
    let (model, cfg) = load(&fixture("tiny-llama"), &device);
    let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
    let prompts = vec![vec![1u32, 40, 41, 42, 43], vec![1u32, 7, 8]];
    let sc = SampleConfig { max_new_tokens: 6, ..Default::default() };
    let fast = generate(&model, &rope, &prompts, &sc, 0, &device);
    // Greedy by hand: re-run the whole sequence for each new token.
    for (p, got) in prompts.iter().zip(&fast) {
        let mut seq = p.clone();
        for _ in 0..sc.max_new_tokens {
            let layout = Layout::padded(&[&seq], 0);
            let inputs = epa::model::ForwardInputs::from_layout(&layout, &rope, &device);
            let h = model.hidden(&inputs, None);
            let [_, t, hd] = h.dims();
            let last = h.slice([0..1, t - 1..t, 0..hd]).reshape([1, hd]);
            let logits = host_f32(model.logits(last));
            let best = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
            seq.push(best as u32);
        }
        assert_eq!(&seq[p.len()..], got.as_slice());
    }
    // Same seed, same samples; another seed, (almost surely) different ones.
    let hot = SampleConfig { max_new_tokens: 12, temperature: 1.0, top_p: 0.9, seed: 7, stop_ids: vec![] };
    let a = generate(&model, &rope, &prompts, &hot, 0, &device);
    let b = generate(&model, &rope, &prompts, &hot, 0, &device);
    let c = generate(&model, &rope, &prompts, &SampleConfig { seed: 8, ..hot.clone() }, 0, &device);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        let dst = dir.path().join(e.file_name());
        std::fs::copy(e.path(), &dst).unwrap();
        let mut perm = std::fs::metadata(&dst).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&dst, perm).unwrap();
    }
    dir
}

#[test]
fn bad_config_json_is_a_clear_error() {
    let dir = copy_fixture("tiny-llama");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(load_err(dir.path()).contains("config.json"));

    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-llama").join("config.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("hidden_size"), "{e}");

    v["hidden_size"] = 64.into();
    v["model_type"] = "gpt_neox".into();
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("unsupported architecture") && e.contains("gpt_neox"), "{e}");
}

#[test]
fn rope_theta_read_from_both_places() {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap()).unwrap();
    assert_eq!(ModelConfig::from_hf_json(&v).unwrap().rope_theta, 1e6);
    // Older files (e.g. SmolLM2's) keep it at top level.
    v.as_object_mut().unwrap().remove("rope_parameters");
    v["rope_theta"] = 100000.0.into();
    assert_eq!(ModelConfig::from_hf_json(&v).unwrap().rope_theta, 1e5);
}

#[test]
fn missing_or_misshaped_tensor_is_a_clear_error() {
    use safetensors::SafeTensors;
    let dir = copy_fixture("tiny-llama");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let all: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let d = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (n, v.shape().to_vec(), d)
        })
        .collect();

    let missing: Vec<_> = all.iter().filter(|t| t.0 != "model.layers.1.mlp.up_proj.weight").cloned().collect();
    std::fs::write(&path, epa::model::save::safetensors_bytes(&missing).unwrap()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"), "{e}");

    let mut bad = all.clone();
    for t in bad.iter_mut() {
        if t.0 == "model.layers.0.self_attn.k_proj.weight" {
            t.1 = vec![16, 128];
        }
    }
    std::fs::write(&path, epa::model::save::safetensors_bytes(&bad).unwrap()).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight")
            && e.contains("model.safetensors")
            && e.contains("[16, 128]"),
        "{e}"
    );

    std::fs::write(&path, b"garbage").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
}
