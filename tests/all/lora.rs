//! LoRA on the tiny fixture models: fresh adapters change nothing, training moves only the
//! adapters, the reference (`lora_off`) is the base exactly and shares its memory, the merged
//! model equals the adapted one, and the PEFT folder has PEFT's names, shapes, config and math.

use crate::common::fixture;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use epa::model::lora::{
    LoraConfig, apply_lora, has_adapters, linears, load_peft_adapter, lora_off, merged, peft_factors,
    save_peft_adapter, trainable_params,
};
use epa::model::save::hf_tensors;
use epa::model::weights::{WeightMap, build_model};
use epa::model::{CausalLm, Layout, ModelConfig, Rope};
use epa::scores::{Scorer, Targets, host_f32};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn load(name: &str, device: &Device) -> (CausalLm, ModelConfig) {
    let dir = fixture(name);
    let cfg = ModelConfig::from_hf_file(&dir.join("config.json")).unwrap();
    let mut w = WeightMap::from_hf_folder(&dir).unwrap();
    (build_model(&cfg, &mut w, device).unwrap(), cfg)
}

/// The golden fixture's token sequences with their completion masks.
fn sequences(name: &str) -> (Vec<Vec<u32>>, Vec<Vec<u8>>) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
    let seqs = v["sequences"].as_array().unwrap();
    let col = |k: &str| -> Vec<Vec<u64>> {
        seqs.iter().map(|s| s[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()).collect()
    };
    let ids = col("input_ids").into_iter().map(|s| s.into_iter().map(|x| x as u32).collect()).collect();
    let masks = col("completion_mask").into_iter().map(|s| s.into_iter().map(|x| x as u8).collect()).collect();
    (ids, masks)
}

struct Batch {
    layout: Layout,
    rope: Rope,
    all: Targets,
    completions: Targets,
}

fn batch(name: &str, cfg: &ModelConfig) -> Batch {
    let (ids, masks) = sequences(name);
    let seqs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<&[u8]> = masks.iter().map(|s| s.as_slice()).collect();
    let layout = Layout::padded(&seqs, cfg.pad_token_id.unwrap_or(0));
    let all = Targets::padded(&layout, &seqs, &masks, true);
    let completions = Targets::padded(&layout, &seqs, &masks, false);
    Batch { rope: Rope::new(cfg.head_dim, cfg.rope_theta), layout, all, completions }
}

/// Per-token log-probs of every next token.
fn logps(model: &CausalLm, b: &Batch, device: &Device) -> Vec<f32> {
    host_f32(Scorer::new(model, &b.rope, 0, device).score(&b.layout, &b.all).token_logps)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn params_by_name(model: &CausalLm) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    hf_tensors(model).into_iter().map(|(n, s, d)| (n, (s, d))).collect()
}

fn all_linear() -> LoraConfig {
    LoraConfig { rank: 4, alpha: 8.0, target_modules: vec!["all-linear".into()], ..LoraConfig::default() }
}

/// Expected adapter size: r·(in + out) per adapted linear layer.
fn expected_trainable(cfg: &ModelConfig, lora: &LoraConfig) -> usize {
    let (h, q, kv, i) = (
        cfg.hidden_size,
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
    let dims = |m: &str| match m {
        "q_proj" => (h, q),
        "k_proj" | "v_proj" => (h, kv),
        "o_proj" => (q, h),
        "gate_proj" | "up_proj" => (h, i),
        "down_proj" => (i, h),
        _ => unreachable!(),
    };
    let per_layer: usize = lora.modules().unwrap().iter().map(|m| dims(m)).map(|(a, b)| lora.rank * (a + b)).sum();
    per_layer * cfg.num_hidden_layers
}

#[test]
fn config_defaults_toml_and_all_linear() {
    let d = LoraConfig::default();
    assert_eq!((d.rank, d.alpha, d.dropout), (8, 16.0, 0.0));
    assert_eq!(d.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
    d.validate().unwrap();
    assert_eq!(d.scale(), 2.0);

    let c: LoraConfig = toml::from_str("rank = 16\ntarget_modules = \"all-linear\"").unwrap();
    assert_eq!(c.rank, 16);
    assert_eq!(c.alpha, 16.0, "unset fields keep their defaults");
    assert_eq!(c.modules().unwrap().len(), 7);
    let c: LoraConfig = toml::from_str("target_modules = [\"v_proj\", \"q_proj\", \"q_proj\"]").unwrap();
    assert_eq!(c.modules().unwrap(), ["q_proj", "v_proj"], "deduplicated, in the decoder's order");

    // The config round-trips through TOML (the trainer's run file).
    let back: LoraConfig = toml::from_str(&toml::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
}

#[test]
fn bad_configs_get_clear_errors() {
    let err = |c: LoraConfig| format!("{:#}", c.validate().unwrap_err());
    let e = err(LoraConfig { rank: 0, ..LoraConfig::default() });
    assert!(e.contains("lora.rank"), "{e}");
    for alpha in [0.0, -1.0, f64::NAN] {
        let e = err(LoraConfig { alpha, ..LoraConfig::default() });
        assert!(e.contains("lora.alpha"), "{e}");
    }
    for dropout in [-0.1, 1.0, f64::INFINITY] {
        let e = err(LoraConfig { dropout, ..LoraConfig::default() });
        assert!(e.contains("lora.dropout must be in [0, 1)"), "{e}");
    }
    let e = err(LoraConfig { dropout: 0.05, ..LoraConfig::default() });
    assert!(e.contains("not supported") && e.contains("dropout = 0"), "{e}");
    let e = err(LoraConfig { target_modules: vec!["q_proj".into(), "qproj".into()], ..LoraConfig::default() });
    assert!(e.contains("unknown module \"qproj\"") && e.contains("gate_proj"), "{e}");
    let e = err(LoraConfig { target_modules: vec![], ..LoraConfig::default() });
    assert!(e.contains("target_modules is empty"), "{e}");
    let e = toml::from_str::<LoraConfig>("rank = 8\nlora_alpha = 16").unwrap_err().to_string();
    assert!(e.contains("unknown field `lora_alpha`"), "{e}");

    // apply_lora refuses a bad config and a second application.
    let device = crate::common::device();
    let (model, _) = load("tiny-llama", &device);
    let bad = LoraConfig { rank: 0, ..LoraConfig::default() };
    assert!(apply_lora(model.clone(), &bad, 0).is_err());
    let adapted = apply_lora(model.clone(), &LoraConfig::default(), 0).unwrap();
    let e = format!("{:#}", apply_lora(adapted.clone(), &LoraConfig::default(), 0).unwrap_err());
    assert!(e.contains("already has LoRA adapters"), "{e}");

    // Saving: no adapters, or a config that does not describe them.
    let dir = tempfile::tempdir().unwrap();
    let e = format!("{:#}", save_peft_adapter(&model, &LoraConfig::default(), "m", dir.path()).unwrap_err());
    assert!(e.contains("no LoRA adapters"), "{e}");
    let other = LoraConfig { rank: 4, ..LoraConfig::default() };
    let e = format!("{:#}", save_peft_adapter(&adapted, &other, "m", dir.path()).unwrap_err());
    assert!(e.contains("rank 8") && e.contains("rank 4"), "{e}");
}

/// Fresh adapters (B = 0) leave every log-prob bit-identical; the adapter count is r·(in+out) per
/// target; the same seed gives the same A, another seed another.
fn check_fresh(name: &str, lora: &LoraConfig) {
    let device = crate::common::device();
    let (base, cfg) = load(name, &device);
    let b = batch(name, &cfg);
    let want = logps(&base, &b, &device);

    let adapted = apply_lora(base.clone(), lora, 7).unwrap();
    assert!(has_adapters(&adapted) && !has_adapters(&base));
    assert_eq!(logps(&adapted, &b, &device), want, "{name}: B = 0 must not change the model");
    assert_eq!(logps(&lora_off(&adapted), &b, &device), want);
    assert_eq!(trainable_params(&adapted), expected_trainable(&cfg, lora));
    assert_eq!(trainable_params(&base), base.num_params(), "no adapters: full fine-tuning");
    let n_adapted = linears(&adapted).iter().filter(|(_, _, l)| l.weight.adapter().is_some()).count();
    assert_eq!(n_adapted, lora.modules().unwrap().len() * cfg.num_hidden_layers);

    let a = |m: &CausalLm| peft_factors(m).into_iter().map(|f| f.lora_a).collect::<Vec<_>>();
    let first = a(&adapted);
    assert_eq!(first, a(&apply_lora(base.clone(), lora, 7).unwrap()), "same seed, same adapters");
    assert_ne!(first, a(&apply_lora(base.clone(), lora, 8).unwrap()), "another seed, other adapters");
    // PEFT's Kaiming-uniform bound 1/√in, and B = 0.
    for f in peft_factors(&adapted) {
        let bound = 1.0 / (f.d_in as f32).sqrt();
        assert!(f.lora_a.iter().all(|x| x.abs() <= bound) && f.lora_a.iter().any(|x| x.abs() > bound / 2.0));
        assert!(f.lora_b.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn fresh_adapters_change_nothing_tiny_llama() {
    check_fresh("tiny-llama", &all_linear());
}

#[test]
fn fresh_adapters_change_nothing_tiny_qwen2() {
    check_fresh("tiny-qwen2", &LoraConfig::default());
}

/// A few AdamW steps (with weight decay) on "raise the completions' log-probs": only the adapter
/// factors move, the base is bit-identical, the log-probs move, merged = adapted, lora_off = base,
/// and the PEFT folder reproduces the merged weights by hand.
fn check_training_and_export(name: &str, lora: &LoraConfig) {
    let device = crate::common::device().autodiff();
    let (base, cfg) = load(name, &device);
    let b = batch(name, &cfg);
    let base_logps = logps(&base, &b, &device);
    let base_params = params_by_name(&base);

    let mut policy = apply_lora(base.clone(), lora, 1).unwrap();
    let reference = lora_off(&policy);
    let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
    let mut losses = Vec::new();
    for _ in 0..4 {
        let sums = Scorer::new(&policy, &b.rope, 0, &device).score(&b.layout, &b.completions).sums;
        let loss = sums.mean().neg();
        losses.push(host_f32(loss.clone())[0]);
        let grads = loss.backward();
        for (module, _, l) in linears(&policy) {
            assert!(l.weight.base().grad(&grads).is_none(), "{module}: frozen base got a gradient");
            if let Some(ad) = l.weight.adapter() {
                assert!(ad.a.val().grad(&grads).is_some() && ad.b.val().grad(&grads).is_some());
            }
        }
        assert!(policy.embed_tokens.weight.val().grad(&grads).is_none());
        assert!(policy.norm.gamma.val().grad(&grads).is_none());
        let grads = GradientsParams::from_grads(grads, &policy);
        policy = optim.step(1e-2, policy, grads);
    }
    assert!(losses[3] < losses[0], "{name}: loss should fall: {losses:?}");

    // Base weights bit-identical (lora_off exposes the policy's stored bases under HF names).
    let after = params_by_name(&lora_off(&policy));
    assert_eq!(after.keys().collect::<Vec<_>>(), base_params.keys().collect::<Vec<_>>());
    for (n, v) in &base_params {
        assert!(after[n] == *v, "{name}: base parameter {n} changed");
    }
    // The adapters did move: B is no longer zero.
    for f in peft_factors(&policy) {
        assert!(f.lora_b.iter().any(|&x| x != 0.0), "{}: B still zero", f.module);
    }

    let policy_logps = logps(&policy, &b, &device);
    let moved = max_abs_diff(&policy_logps, &base_logps);
    assert!(moved > 1e-3, "{name}: training should move log-probs (max Δ {moved})");
    assert_eq!(logps(&reference, &b, &device), base_logps, "{name}: reference built before training");
    assert_eq!(logps(&lora_off(&policy), &b, &device), base_logps, "{name}: reference built after training");
    let dense = merged(&policy);
    assert!(!has_adapters(&dense));
    let merge_err = max_abs_diff(&logps(&dense, &b, &device), &policy_logps);
    assert!(merge_err <= 1e-5, "{name}: merged vs adapted log-probs differ by {merge_err}");
    eprintln!("{name}: losses {losses:?}; max |Δ logp| trained vs base {moved:.3e}; merged vs adapted {merge_err:.1e}");

    let dir = tempfile::tempdir().unwrap();
    save_peft_adapter(&policy, lora, "tests/fixtures/tiny", dir.path()).unwrap();
    check_peft_folder(dir.path(), lora, &cfg, &base_params, &params_by_name(&dense));

    // Read back onto a fresh base: the same config and bit-identical log-probs.
    let (loaded, loaded_cfg) = load_peft_adapter(load(name, &device).0, dir.path()).unwrap();
    assert_eq!(loaded_cfg.rank, lora.rank);
    assert_eq!(loaded_cfg.alpha, lora.alpha);
    assert_eq!(loaded_cfg.modules().unwrap(), lora.modules().unwrap());
    assert_eq!(logps(&loaded, &b, &device), policy_logps, "{name}: PEFT round trip");
    assert_eq!(trainable_params(&loaded), trainable_params(&policy));

    // A burn record (the trainer's checkpoint) restores adapters and their ids on a model
    // prepared with another seed, so optimiser state keyed by id carries over.
    let fresh = apply_lora(load(name, &device).0, lora, 99).unwrap();
    let restored = fresh.load_record(policy.clone().into_record());
    assert_eq!(logps(&restored, &b, &device), policy_logps, "{name}: record round trip");
    let ids = |m: &CausalLm| -> Vec<_> {
        linears(m).iter().filter_map(|(_, _, l)| l.weight.adapter().map(|ad| (ad.a.id, ad.b.id))).collect()
    };
    assert_eq!(ids(&restored), ids(&policy));
}

/// The folder holds exactly PEFT's two files; names, shapes and config are PEFT's; and
/// `W + (alpha/r)·B·A` from the saved tensors reproduces the merged weights.
fn check_peft_folder(
    dir: &Path,
    lora: &LoraConfig,
    cfg: &ModelConfig,
    base: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dense: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) {
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["adapter_config.json", "adapter_model.safetensors"]);

    let conf: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(conf["peft_type"], "LORA");
    assert_eq!(conf["task_type"], "CAUSAL_LM");
    assert_eq!(conf["r"], lora.rank);
    assert_eq!(conf["lora_alpha"].as_f64().unwrap(), lora.alpha);
    assert_eq!(conf["lora_dropout"], 0.0);
    assert_eq!(conf["bias"], "none");
    assert_eq!(conf["fan_in_fan_out"], false);
    assert_eq!(conf["inference_mode"], true);
    assert_eq!(conf["base_model_name_or_path"], "tests/fixtures/tiny");
    let targets: Vec<&str> = conf["target_modules"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(targets, lora.modules().unwrap());

    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let read = |n: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(n).unwrap_or_else(|_| panic!("missing {n}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let d = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        (t.shape().to_vec(), d)
    };

    let mut expected_names = Vec::new();
    let scale = lora.scale();
    let r = lora.rank;
    for layer in 0..cfg.num_hidden_layers {
        for m in epa::model::lora::LINEAR_MODULES {
            let group = if ["q_proj", "k_proj", "v_proj", "o_proj"].contains(&m) { "self_attn" } else { "mlp" };
            let module = format!("model.layers.{layer}.{group}.{m}");
            let wname = format!("{module}.weight");
            let (shape, w) = &base[&wname];
            let (out, inp) = (shape[0], shape[1]);
            if !targets.contains(&m) {
                assert_eq!(dense[&wname], base[&wname], "{wname}: not a target, must be untouched");
                continue;
            }
            let an = format!("base_model.model.{module}.lora_A.weight");
            let bn = format!("base_model.model.{module}.lora_B.weight");
            let (a_shape, a) = read(&an);
            let (b_shape, bm) = read(&bn);
            assert_eq!(a_shape, [r, inp], "{an}");
            assert_eq!(b_shape, [out, r], "{bn}");
            // W' = W + scale·B·A, in f64, against the merged model's weight (HF layout [out, in]).
            let got = &dense[&wname].1;
            let mut max_err = 0f64;
            for o in 0..out {
                for i in 0..inp {
                    let ba: f64 = (0..r).map(|k| bm[o * r + k] as f64 * a[k * inp + i] as f64).sum();
                    let want = w[o * inp + i] as f64 + scale * ba;
                    max_err = max_err.max((got[o * inp + i] as f64 - want).abs());
                }
            }
            assert!(max_err < 1e-6, "{wname}: merged differs from W + s·B·A by {max_err:.2e}");
            expected_names.push(an);
            expected_names.push(bn);
        }
    }
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    expected_names.sort();
    assert_eq!(names, expected_names, "exactly the lora_A / lora_B tensors of the targets");
}

#[test]
fn training_moves_only_adapters_and_exports_peft_tiny_llama() {
    check_training_and_export("tiny-llama", &all_linear());
}

#[test]
fn training_moves_only_adapters_and_exports_peft_tiny_qwen2() {
    // Default targets (attention only), a non-integer alpha, Qwen2's q/k/v biases.
    let lora = LoraConfig { rank: 2, alpha: 3.5, ..LoraConfig::default() };
    check_training_and_export("tiny-qwen2", &lora);
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

/// `lora_off` shares the base tensors: building it allocates (almost) nothing, while `merged`
/// (which does create new dense weights for the adapted layers) visibly does.
#[test]
#[cfg(target_os = "linux")]
fn lora_off_shares_the_base_weights() {
    let device = crate::common::device();
    let mut cfg = ModelConfig::from_hf_file(&fixture("tiny-llama").join("config.json")).unwrap();
    (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) = (1024, 8, 8, 128);
    (cfg.intermediate_size, cfg.num_hidden_layers) = (2048, 4);
    let base = epa::model::llama::init_random(&cfg, &device);
    for (_, _, l) in linears(&base) {
        let _ = l.weight.val(); // initialise the lazy weights now
    }
    let policy = apply_lora(base, &LoraConfig::default(), 0).unwrap();
    let attn_bytes = 4 * 4 * 1024 * 1024 * cfg.num_hidden_layers; // q, k, v, o: 1024², f32, 4 layers

    // RSS is the whole process's: tests running beside this one allocate and free too (and the
    // allocator may reuse freed pages for `merged`), so a measurement can be disturbed. Three tries;
    // one clean one is the evidence.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let before = rss_bytes();
        let reference = lora_off(&policy);
        let off_growth = rss_bytes().saturating_sub(before);
        let before = rss_bytes();
        let dense = merged(&policy);
        let merged_growth = rss_bytes().saturating_sub(before);
        eprintln!(
            "adapted weights {} MiB; lora_off +{} KiB; merged +{} KiB",
            attn_bytes >> 20,
            off_growth >> 10,
            merged_growth >> 10
        );
        // Kept alive until both are measured, so `merged` cannot reuse lora_off's pages.
        drop((reference, dense));
        if off_growth < attn_bytes / 8 && merged_growth > attn_bytes / 2 {
            return;
        }
        seen.push((off_growth, merged_growth));
    }
    panic!(
        "lora_off should not copy the base weights (< {} bytes) while merged allocates them (> {}): (lora_off, merged) growth {seen:?}",
        attn_bytes / 8,
        attn_bytes / 2
    );
}

/// Broken or unsupported PEFT folders: one clear error each, naming the file or tensor.
#[test]
fn bad_peft_folders_get_clear_errors() {
    let device = crate::common::device();
    let (base, _) = load("tiny-llama", &device);
    let lora = LoraConfig::default();
    let dir = tempfile::tempdir().unwrap();
    save_peft_adapter(&apply_lora(base.clone(), &lora, 3).unwrap(), &lora, "m", dir.path()).unwrap();
    let conf_path = dir.path().join("adapter_config.json");
    let good_conf = std::fs::read_to_string(&conf_path).unwrap();
    let err = || format!("{:#}", load_peft_adapter(base.clone(), dir.path()).unwrap_err());

    let mut v: Value = serde_json::from_str(&good_conf).unwrap();
    v["use_dora"] = true.into();
    std::fs::write(&conf_path, v.to_string()).unwrap();
    let e = err();
    assert!(e.contains("adapter_config.json") && e.contains("use_dora"), "{e}");

    let mut v: Value = serde_json::from_str(&good_conf).unwrap();
    v["r"] = 4.into();
    std::fs::write(&conf_path, v.to_string()).unwrap();
    let e = err();
    assert!(e.contains("adapter_model.safetensors") && e.contains("lora_A.weight") && e.contains("[8, 64]"), "{e}");
    std::fs::write(&conf_path, &good_conf).unwrap();

    // A tensor for a module this model does not have.
    let st_path = dir.path().join("adapter_model.safetensors");
    let mut w = WeightMap::default();
    w.read_safetensors(&st_path).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let names: Vec<String> = w.names().cloned().collect();
    for n in names {
        let shape = if n.contains("lora_A") {
            vec![8, 64]
        } else {
            vec![if n.contains("k_proj") || n.contains("v_proj") { 32 } else { 64 }, 8]
        };
        tensors.push((n.clone(), shape.clone(), w.take(&n, &shape).unwrap()));
    }
    tensors.push((
        "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight".into(),
        vec![8, 64],
        vec![0.0; 512],
    ));
    std::fs::write(&st_path, epa::model::save::safetensors_bytes(&tensors).unwrap()).unwrap();
    let e = err();
    assert!(e.contains("layers.9.self_attn.q_proj.lora_A.weight") && e.contains("not matching"), "{e}");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 =
        status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

/// Memory of LoRA training steps on the real SmolLM2-135M (30 layers): 4 sequences × 256 tokens,
/// default LoRA (r = 8, attention), AdamW. Needs the smollm2 artifact; run with `--ignored`.
#[test]
#[ignore]
#[cfg(target_os = "linux")]
fn smollm2_lora_training_step_memory() {
    use rand::{Rng, SeedableRng};
    let device = crate::common::device().autodiff();
    let lm = epa::model::load::load_model("smollm2", &device).unwrap_or_else(|e| panic!("{e:#}"));
    let loaded_mib = peak_rss_mib();
    let cfg = &lm.config;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<Vec<u32>> =
        (0..4).map(|_| (0..256).map(|_| rng.random_range(3..cfg.vocab_size as u32)).collect()).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<Vec<u8>> = ids.iter().map(|s| (0..s.len()).map(|t| (t >= 128) as u8).collect()).collect();
    let masks: Vec<&[u8]> = masks.iter().map(|m| m.as_slice()).collect();
    let layout = Layout::padded(&seqs, 0);
    let targets = Targets::padded(&layout, &seqs, &masks, false);

    let lora = LoraConfig::default();
    let mut policy = apply_lora(lm.model, &lora, 0).unwrap();
    let reference = lora_off(&policy);
    let mut optim = AdamWConfig::new().init();
    for step in 0..2 {
        let t0 = std::time::Instant::now();
        let ref_sums = Scorer::new(&reference, &lm.rope, 0, &device).score(&layout, &targets).sums.detach();
        let sums = Scorer::new(&policy, &lm.rope, 0, &device).score(&layout, &targets).sums;
        let loss = (sums - ref_sums).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        policy = optim.step(1e-4, policy, grads);
        let _ = host_f32(policy.norm.gamma.val());
        eprintln!("step {step}: {:.1} s, peak RSS {:.0} MiB", t0.elapsed().as_secs_f64(), peak_rss_mib());
    }
    let peak = peak_rss_mib();
    eprintln!(
        "SmolLM2-135M LoRA r={} ({} trainable of {}): peak RSS after load {loaded_mib:.0} MiB, after 2 steps {peak:.0} MiB",
        lora.rank,
        trainable_params(&policy),
        policy.num_params()
    );
    assert!(peak < 8192.0, "a LoRA step on SmolLM2-135M should fit well within 24 GiB; peak {peak:.0} MiB");
}
