//! The model against transformers: per-token log-probs and loss gradients of the golden fixtures
//! (tests/fixtures/*, copied from shared/fixtures; made with PyTorch 2.15 + transformers 5.24).

use crate::common::fixture;
use burn::tensor::{Device, Tensor, TensorData};
use epa::device::Precision;
use epa::model::save::named_params;
use epa::model::weights::{WeightMap, build_model};
use epa::model::{Layout, ModelConfig, Rope};
use epa::scores::{Scorer, Targets, host_f32};
use serde_json::Value;

struct Golden {
    ids: Vec<Vec<u32>>,
    masks: Vec<Vec<u8>>,
    token_logps: Vec<Vec<f64>>,
    sums: Vec<f64>,
    ref_sums: Vec<f64>,
    groups: Vec<(usize, Vec<usize>, Vec<usize>)>,
    beta: f64,
    w: f64,
    dpo_loss: f64,
    epa_loss: f64,
}

fn golden(name: &str) -> Golden {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
    let seqs = v["sequences"].as_array().unwrap();
    let u = |x: &Value| x.as_array().unwrap().iter().map(|y| y.as_u64().unwrap()).collect::<Vec<_>>();
    let f = |x: &Value| x.as_array().unwrap().iter().map(|y| y.as_f64().unwrap()).collect::<Vec<_>>();
    Golden {
        ids: seqs.iter().map(|s| u(&s["input_ids"]).into_iter().map(|x| x as u32).collect()).collect(),
        masks: seqs.iter().map(|s| u(&s["completion_mask"]).into_iter().map(|x| x as u8).collect()).collect(),
        token_logps: seqs.iter().map(|s| f(&s["token_logps"])).collect(),
        sums: seqs.iter().map(|s| s["completion_logp_sum"].as_f64().unwrap()).collect(),
        ref_sums: seqs.iter().map(|s| s["ref_completion_logp_sum"].as_f64().unwrap()).collect(),
        groups: v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let idx = |k: &str| u(&g[k]).into_iter().map(|x| x as usize).collect::<Vec<_>>();
                (g["positive"].as_u64().unwrap() as usize, idx("strong"), idx("weak"))
            })
            .collect(),
        beta: v["beta"].as_f64().unwrap(),
        w: v["epa_w"].as_f64().unwrap(),
        dpo_loss: v["dpo_loss"].as_f64().unwrap(),
        epa_loss: v["epa_loss"].as_f64().unwrap(),
    }
}

fn load(name: &str, device: &Device) -> (epa::model::CausalLm, ModelConfig) {
    let dir = fixture(name);
    let cfg = ModelConfig::from_hf_file(&dir.join("config.json")).unwrap();
    let mut w = WeightMap::from_hf_folder(&dir).unwrap();
    (build_model(&cfg, &mut w, device).unwrap(), cfg)
}

/// How close to transformers' float32 numbers each compute dtype must come: float32 to 1e-4
/// (log-probs, relative to max(1, |logp|); gradients, relative to the parameter's largest gradient
/// entry); bfloat16 (float32 master weights, bf16 compute: 8 significant bits per operation) to
/// 2e-2 for log-probs and 5e-2 for gradients.
fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::Float32 => 1e-4,
        Precision::Bfloat16 => 2e-2,
    }
}

fn grad_tolerance(p: Precision) -> f64 {
    match p {
        Precision::Float32 => 1e-4,
        Precision::Bfloat16 => 5e-2,
    }
}

/// Whether `device` computes in `precision` (wgpu has no bf16 arithmetic: those checks run on the
/// CPU, which emulates it, and on CUDA).
fn computes_in(device: &Device, precision: Precision) -> bool {
    let ok = precision.check(crate::common::spec(), device).is_ok();
    if !ok {
        eprintln!("{}: no {precision} arithmetic, check not run there", crate::common::spec());
    }
    ok
}

fn check_token_logps(name: &str, precision: Precision) {
    let device = crate::common::device();
    if !computes_in(&device, precision) {
        return;
    }
    let (mut model, cfg) = load(name, &device);
    model.precision = precision;
    let tol = tolerance(precision);
    let g = golden(name);
    let seqs: Vec<&[u32]> = g.ids.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<&[u8]> = g.masks.iter().map(|s| s.as_slice()).collect();
    // One padded batch of sequences of different lengths: padding and masking are exercised.
    let lens: std::collections::BTreeSet<usize> = seqs.iter().map(|s| s.len()).collect();
    assert!(lens.len() > 1, "fixture should have sequences of different lengths");
    let layout = Layout::padded(&seqs, cfg.pad_token_id.unwrap_or(0));
    let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
    let targets = Targets::padded(&layout, &seqs, &masks, true);
    let out = Scorer::new(&model, &rope, 0, &device).score(&layout, &targets);
    let got: Vec<f32> = host_f32(out.token_logps);
    let mut k = 0;
    let mut max_err = 0f64;
    for (s, want) in g.token_logps.iter().enumerate() {
        assert_eq!(want.len(), seqs[s].len() - 1);
        for (t, &w) in want.iter().enumerate() {
            let e = (got[k] as f64 - w).abs() / w.abs().max(1.0);
            max_err = max_err.max(e);
            assert!(e <= tol, "{name} {precision}: seq {s} token {t}: got {} want {w}", got[k]);
            k += 1;
        }
    }
    assert_eq!(k, got.len());
    eprintln!("{name} {precision}: max |Δ token_logp| / max(1, |token_logp|) = {max_err:.2e}");

    // Completion sums (the loss input) from the completion-only targets.
    let targets = Targets::padded(&layout, &seqs, &masks, false);
    let sums: Vec<f32> = host_f32(Scorer::new(&model, &rope, 0, &device).score(&layout, &targets).sums);
    for (s, want) in g.sums.iter().enumerate() {
        let e = (sums[s] as f64 - want).abs();
        assert!(e < 10.0 * tol * want.abs().max(1.0), "{name} {precision}: seq {s} sum {} want {want}", sums[s]);
    }
}

#[test]
fn tiny_llama_token_logps_match_transformers() {
    check_token_logps("tiny-llama", Precision::Float32);
}

#[test]
fn tiny_qwen2_token_logps_match_transformers() {
    check_token_logps("tiny-qwen2", Precision::Float32);
}

#[test]
fn tiny_llama_bf16_token_logps_are_close_to_transformers() {
    check_token_logps("tiny-llama", Precision::Bfloat16);
}

#[test]
fn tiny_qwen2_bf16_token_logps_are_close_to_transformers() {
    check_token_logps("tiny-qwen2", Precision::Bfloat16);
}

/// DPO / EPA losses written directly here (the loss module has its own tests); the point is the
/// gradient through the whole model.
fn loss(g: &Golden, sums: Tensor<1>, epa: bool, device: &Device) -> Tensor<1> {
    let n = g.ref_sums.len();
    let ref_sums = Tensor::<1>::from_data(TensorData::new(g.ref_sums.iter().map(|&x| x as f32).collect(), [n]), device);
    let r = (sums - ref_sums).mul_scalar(g.beta);
    let pick = |i: usize| r.clone().slice(i..i + 1);
    let mut terms = Vec::new();
    for (pos, strong, weak) in &g.groups {
        if epa {
            let mut parts = vec![Tensor::<1>::from_data(TensorData::new(vec![g.w.ln() as f32], [1]), device)];
            for &j in strong.iter().chain(weak) {
                parts.push(pick(j) - pick(*pos));
            }
            let z = Tensor::cat(parts, 0);
            let m = z.clone().detach().max();
            terms.push((z - m.clone()).exp().sum().log() + m);
        } else {
            let margin = pick(*pos) - pick(strong[0]);
            terms.push(burn::tensor::activation::log_sigmoid(margin).neg());
        }
    }
    Tensor::cat(terms, 0).mean()
}

fn check_grads(name: &str, epa: bool, precision: Precision) {
    let device = crate::common::device().autodiff();
    if !computes_in(&device, precision) {
        return;
    }
    let (mut model, cfg) = load(name, &device);
    model.precision = precision;
    let tol = tolerance(precision);
    let g = golden(name);
    let seqs: Vec<&[u32]> = g.ids.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<&[u8]> = g.masks.iter().map(|s| s.as_slice()).collect();
    let layout = Layout::padded(&seqs, cfg.pad_token_id.unwrap_or(0));
    let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
    let targets = Targets::padded(&layout, &seqs, &masks, false);
    let sums = Scorer::new(&model, &rope, 0, &device).score(&layout, &targets).sums;
    let l = loss(&g, sums, epa, &device);
    let lv: f32 = host_f32(l.clone())[0];
    let want_loss = if epa { g.epa_loss } else { g.dpo_loss };
    assert!(
        (lv as f64 - want_loss).abs() < tol * want_loss.abs().max(1.0),
        "{name} {precision}: loss {lv} want {want_loss}"
    );
    let grads = l.backward();

    let file = fixture(name).join(if epa { "grads_epa.safetensors" } else { "grads_dpo.safetensors" });
    let mut want = WeightMap::default();
    want.read_safetensors(&file).unwrap();
    let params = named_params(&model);
    assert_eq!(params.len(), want.len(), "{name}: parameter count differs from {}", file.display());
    let mut worst = 0f32;
    for (pname, t) in params {
        let gt = t.map(|x| x.grad(&grads), |x| x.grad(&grads)).unwrap_or_else(|| panic!("no grad for {pname}"));
        let (shape, got) = gt.to_hf_host();
        let w = want.take(&pname, &shape).unwrap();
        let max_ref = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let max_err = got.iter().zip(&w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // A parameter's gradient must be float32 whatever the compute dtype (master weights).
        assert_eq!(gt.dtype(), burn::tensor::DType::F32, "{name}: grad of {pname}");
        assert!(
            max_err <= grad_tolerance(precision) as f32 * max_ref.max(1e-12),
            "{name} {} {precision}: grad of {pname}: max err {max_err:.3e} vs max |grad| {max_ref:.3e}",
            if epa { "EPA" } else { "DPO" }
        );
        worst = worst.max(max_err / max_ref.max(1e-12));
    }
    eprintln!("{name} {} {precision}: worst grad error / max |grad| = {worst:.2e}", if epa { "EPA" } else { "DPO" });
}

#[test]
fn tiny_llama_dpo_grads_match_torch() {
    check_grads("tiny-llama", false, Precision::Float32);
}

#[test]
fn tiny_llama_epa_grads_match_torch() {
    check_grads("tiny-llama", true, Precision::Float32);
}

#[test]
fn tiny_qwen2_dpo_grads_match_torch() {
    check_grads("tiny-qwen2", false, Precision::Float32);
}

#[test]
fn tiny_qwen2_epa_grads_match_torch() {
    check_grads("tiny-qwen2", true, Precision::Float32);
}

#[test]
fn tiny_llama_bf16_epa_grads_are_close_to_torch() {
    check_grads("tiny-llama", true, Precision::Bfloat16);
}

#[test]
fn tiny_qwen2_bf16_dpo_grads_are_close_to_torch() {
    check_grads("tiny-qwen2", false, Precision::Bfloat16);
}
