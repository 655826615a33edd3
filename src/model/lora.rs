//! LoRA adapters on the decoder's linear layers, built on burn's own LoRA reparameterization.
//!
//! burn 0.22 lets a `Param<Tensor<2>>` carry a [`LoraAdapter`]: the parameter keeps its frozen
//! *base* tensor and `val()` returns `base + (alpha/r)·(a @ b)`. The model code does not change —
//! `Linear::forward` reads `weight.val()` — and the optimiser, autodiff and records see the
//! factors `a`, `b` as ordinary parameters, while the base receives no gradient.
//!
//! Orientation. burn stores a linear weight as `[in, out]` and its factors as `a: [in, r]`,
//! `b: [r, out]` (delta `a·b`, `[in, out]`). PEFT stores `lora_A.weight: [r, in]`,
//! `lora_B.weight: [out, r]` with delta `B·A` (`[out, in]`), so `lora_A = aᵀ`, `lora_B = bᵀ` and
//! `B·A = (a·b)ᵀ`: the same delta in each library's layout. Both scale by `alpha / r`.
//!
//! Initialisation (as PEFT's default): `A ~ U(-1/√in, 1/√in)` (Kaiming-uniform with a = √5),
//! `B = 0`, so a freshly adapted model computes exactly what the base computes. `A` is drawn
//! from a ChaCha8 stream seeded by the caller, module by module in a fixed order, so the same
//! seed gives the same adapters. (burn's `Lora` draws `A` from the device RNG, which is not
//! seedable per call; that is the only reason [`apply_lora`] attaches burn's `LoraAdapter`
//! through its own small `Reparameterizer` instead of `burn::module::Lora`.)
//!
//! Checkpoints: `policy.clone().into_record()` / `apply_lora(base, &cfg, any_seed)?.load_record(r)`
//! restore the adapters *and their parameter ids* (so optimiser state keyed by id carries over).
//!
//! Dropout. PEFT's `lora_dropout` drops the adapter's *input* activations; burn's adapter
//! reparameterizes the *weight*, so there is no input to drop. Only `dropout = 0` is accepted.
//!
//! ```no_run
//! # fn demo(model: epa::model::CausalLm) -> anyhow::Result<()> {
//! use epa::model::lora::{LoraConfig, apply_lora, load_peft_adapter, lora_off, merged, save_peft_adapter};
//! let cfg = LoraConfig { rank: 16, alpha: 32.0, ..LoraConfig::default() };
//! let policy = apply_lora(model, &cfg, 42)?; // only the adapters train
//! let reference = lora_off(&policy);         // the base, sharing the policy's tensors
//! // … train `policy` …
//! save_peft_adapter(&policy, &cfg, "HuggingFaceTB/SmolLM2-135M", "out/adapter".as_ref())?;
//! let dense = merged(&policy);               // for a plain HF export
//! // Later, or from a PEFT folder written by Python: base frozen, adapters trainable again.
//! # let base = lora_off(&policy);
//! let (policy, cfg) = load_peft_adapter(base, "out/adapter".as_ref())?;
//! # Ok(()) }
//! ```

use anyhow::{Context, Result, bail, ensure};
use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::nn::Linear;
use burn::tensor::{FloatDType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;

use super::llama::{CausalLm, DecoderLayer};
use super::save::{safetensors_bytes, write_atomic};
use super::weights::transpose;

/// The decoder's linear layers, by the names transformers (and PEFT's `target_modules`) use.
pub const LINEAR_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// PEFT's shorthand for every linear layer except the output head.
pub const ALL_LINEAR: &str = "all-linear";

/// LoRA settings (the `[adapters]` section of a run config). Field names follow PEFT's
/// `LoraConfig` where they mean the same thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of the update `ΔW = (alpha/r)·B·A`.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank` (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapter input. Only 0 is supported (see the module docs).
    pub dropout: f64,
    /// Which linear layers get adapters: names from [`LINEAR_MODULES`], or `"all-linear"`
    /// (a single string or a list).
    #[serde(deserialize_with = "string_or_list")]
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
        }
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl LoraConfig {
    /// Checks every field; each problem gets its own message naming the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.rank > 0, "lora.rank must be a positive integer, got {}", self.rank);
        ensure!(
            self.alpha.is_finite() && self.alpha > 0.0,
            "lora.alpha must be a finite number > 0, got {}",
            self.alpha
        );
        ensure!(
            self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout),
            "lora.dropout must be in [0, 1), got {}",
            self.dropout
        );
        ensure!(
            self.dropout == 0.0,
            "lora.dropout = {} is not supported: epa's LoRA (burn's weight reparameterization \
             W + (alpha/r)·A·B) has no separate adapter input to drop; set lora.dropout = 0",
            self.dropout
        );
        self.modules().map(|_| ())
    }

    /// The target modules, with `"all-linear"` expanded, duplicates removed, in the decoder's order.
    pub fn modules(&self) -> Result<Vec<&'static str>> {
        ensure!(
            !self.target_modules.is_empty(),
            "lora.target_modules is empty; name some of {LINEAR_MODULES:?} or use \"{ALL_LINEAR}\""
        );
        for m in &self.target_modules {
            ensure!(
                m == ALL_LINEAR || LINEAR_MODULES.contains(&m.as_str()),
                "lora.target_modules: unknown module {m:?}; known: {LINEAR_MODULES:?} or \"{ALL_LINEAR}\""
            );
        }
        let all = self.target_modules.iter().any(|m| m == ALL_LINEAR);
        Ok(LINEAR_MODULES.into_iter().filter(|k| all || self.target_modules.iter().any(|m| m == k)).collect())
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The seven linear layers of a decoder layer: (HF sub-path, module name, layer).
fn layer_linears(l: &DecoderLayer) -> [(&'static str, &'static str, &Linear); 7] {
    let (a, m) = (&l.self_attn, &l.mlp);
    [
        ("self_attn", "q_proj", &a.q_proj),
        ("self_attn", "k_proj", &a.k_proj),
        ("self_attn", "v_proj", &a.v_proj),
        ("self_attn", "o_proj", &a.o_proj),
        ("mlp", "gate_proj", &m.gate_proj),
        ("mlp", "up_proj", &m.up_proj),
        ("mlp", "down_proj", &m.down_proj),
    ]
}

fn layer_linears_mut(l: &mut DecoderLayer) -> [(&'static str, &'static str, &mut Linear); 7] {
    let (a, m) = (&mut l.self_attn, &mut l.mlp);
    [
        ("self_attn", "q_proj", &mut a.q_proj),
        ("self_attn", "k_proj", &mut a.k_proj),
        ("self_attn", "v_proj", &mut a.v_proj),
        ("self_attn", "o_proj", &mut a.o_proj),
        ("mlp", "gate_proj", &mut m.gate_proj),
        ("mlp", "up_proj", &mut m.up_proj),
        ("mlp", "down_proj", &mut m.down_proj),
    ]
}

/// Every decoder linear layer with its Hugging Face module path
/// (`model.layers.{i}.self_attn.q_proj`) and its module name (`q_proj`), in a fixed order.
pub fn linears(model: &CausalLm) -> Vec<(String, &'static str, &Linear)> {
    let mut out = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        for (group, name, lin) in layer_linears(layer) {
            out.push((format!("model.layers.{i}.{group}.{name}"), name, lin));
        }
    }
    out
}

/// Applies `f` to every decoder linear layer (HF module path, module name, layer), in the order
/// of [`linears`].
fn map_linears(
    mut model: CausalLm,
    mut f: impl FnMut(&str, &'static str, Linear) -> Result<Linear>,
) -> Result<CausalLm> {
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (group, name, lin) in layer_linears_mut(layer) {
            *lin = f(&format!("model.layers.{i}.{group}.{name}"), name, lin.clone())?;
        }
    }
    Ok(model)
}

/// Whether any linear layer carries a LoRA adapter.
pub fn has_adapters(model: &CausalLm) -> bool {
    linears(model).iter().any(|(_, _, l)| l.weight.adapter().is_some())
}

/// Attaches one prepared adapter to the 2-D parameter it is applied to (a `Linear`'s weight) and
/// freezes every parameter it sees.
struct AttachAdapter {
    factors: Option<(Tensor<2>, Tensor<2>)>,
    scale: f64,
}

impl Reparameterizer for AttachAdapter {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        _path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let base = param.set_require_grad(false);
        if D != 2 {
            return (base, None);
        }
        let Some((a, b)) = self.factors.take() else { return (base, None) };
        let adapter = LoraAdapter { a: Param::from_tensor(a), b: Param::from_tensor(b), scale: self.scale };
        (base, Some(adapter))
    }
}

/// The factors for a `[d_in, d_out]` weight: `A ~ U(-1/√d_in, 1/√d_in)` as `[d_in, r]`, `B = 0`
/// as `[r, d_out]`, at the base weight's float precision.
fn init_factors(base: &Tensor<2>, rank: usize, rng: &mut ChaCha8Rng) -> (Tensor<2>, Tensor<2>) {
    let [d_in, d_out] = base.dims();
    let bound = 1.0 / (d_in as f32).sqrt();
    let a: Vec<f32> = (0..d_in * rank).map(|_| rng.random_range(-bound..bound)).collect();
    factors_like(base, a, vec![0.0; rank * d_out], rank)
}

/// Host factors (burn orientation) as tensors on `base`'s device, at its float precision.
fn factors_like(base: &Tensor<2>, a: Vec<f32>, b: Vec<f32>, rank: usize) -> (Tensor<2>, Tensor<2>) {
    let [d_in, d_out] = base.dims();
    let device = base.device();
    let a = Tensor::<2>::from_data(TensorData::new(a, [d_in, rank]), &device);
    let b = Tensor::<2>::from_data(TensorData::new(b, [rank, d_out]), &device);
    let dtype = base.dtype();
    if dtype.is_float() && dtype != a.dtype() {
        (a.cast(FloatDType::from(dtype)), b.cast(FloatDType::from(dtype)))
    } else {
        (a, b)
    }
}

/// Freezes every base parameter and attaches trainable LoRA adapters (`B = 0`, `A` seeded by
/// `seed`) to the target linear layers. The result computes exactly what `model` computed until
/// the adapters are trained. Errors on an invalid config or a model that already has adapters.
pub fn apply_lora(model: CausalLm, cfg: &LoraConfig, seed: u64) -> Result<CausalLm> {
    cfg.validate()?;
    ensure!(!has_adapters(&model), "the model already has LoRA adapters; apply_lora must be called once");
    let targets = cfg.modules()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    map_linears(model.no_grad(), |_, name, lin| {
        if !targets.contains(&name) {
            return Ok(lin);
        }
        let factors = init_factors(&lin.weight.base(), cfg.rank, &mut rng);
        Ok(attach(lin, factors, cfg.scale()))
    })
}

/// Attaches trainable factors `a: [in, r]`, `b: [r, out]` to `lin`'s (frozen) weight.
fn attach(lin: Linear, factors: (Tensor<2>, Tensor<2>), scale: f64) -> Linear {
    lin.apply_reparameterization(AttachAdapter { factors: Some(factors), scale })
}

/// The same model with its adapters switched off: the reference policy for DPO/EPA with LoRA.
///
/// No weight is copied. burn tensors are reference-counted handles, and `Param::base()` returns a
/// handle to the adapted parameter's stored base tensor; the returned model wraps those handles
/// in adapter-free parameters (same ids), and every other parameter is a clone of the policy's
/// (again a handle). Policy and reference therefore share one copy of the base weights, which
/// the optimiser never replaces because it has no gradient. All parameters of the result are
/// frozen. Build it once; after optimiser steps it still shares the (unchanged) base.
pub fn lora_off(model: &CausalLm) -> CausalLm {
    let off = map_linears(model.clone(), |_, _, mut lin| {
        if lin.weight.adapter().is_some() {
            lin.weight = Param::initialized(lin.weight.id, lin.weight.base());
        }
        Ok(lin)
    });
    off.expect("switching adapters off cannot fail")
}

/// The adapters folded into dense weights, `W + (alpha/r)·A·B`, detached and frozen: a plain
/// model for export ([`crate::model::save::save_weights`]) or fast inference. Layers without
/// adapters share their tensors with `model`.
pub fn merged(model: &CausalLm) -> CausalLm {
    model.clone().materialize()
}

/// Trainable parameter count: the adapter factors when the model has adapters, otherwise every
/// parameter (full fine-tuning).
pub fn trainable_params(model: &CausalLm) -> usize {
    if !has_adapters(model) {
        return model.num_params();
    }
    linears(model)
        .iter()
        .filter_map(|(_, _, l)| l.weight.adapter())
        .map(|ad| ad.a.lazy_shape().num_elements() + ad.b.lazy_shape().num_elements())
        .sum()
}

/// One adapter in PEFT's layout: `lora_A [r, in]`, `lora_B [out, r]` (host f32).
pub struct PeftFactors {
    /// HF module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// The module's own name, one of [`LINEAR_MODULES`] (e.g. `q_proj`).
    pub name: &'static str,
    /// Adapter rank `r`.
    pub rank: usize,
    /// Input width of the adapted linear layer.
    pub d_in: usize,
    /// Output width of the adapted linear layer.
    pub d_out: usize,
    /// `lora_A.weight`, `[r, in]` row-major.
    pub lora_a: Vec<f32>,
    /// `lora_B.weight`, `[out, r]` row-major.
    pub lora_b: Vec<f32>,
    /// The factor `alpha / r` the update `B·A` is multiplied by.
    pub scale: f64,
}

/// Every adapter of `model` in PEFT's orientation.
pub fn peft_factors(model: &CausalLm) -> Vec<PeftFactors> {
    linears(model)
        .into_iter()
        .filter_map(|(module, name, l)| {
            let ad = l.weight.adapter()?;
            let [d_in, rank] = ad.a.lazy_shape().dims();
            let [_, d_out] = ad.b.lazy_shape().dims();
            let a = super::host_f32(ad.a.val()); // [in, r]
            let b = super::host_f32(ad.b.val()); // [r, out]
            Some(PeftFactors {
                module,
                name,
                rank,
                d_in,
                d_out,
                lora_a: transpose(&a, d_in, rank),
                lora_b: transpose(&b, rank, d_out),
                scale: ad.scale,
            })
        })
        .collect()
}

/// PEFT's `adapter_config.json` for `cfg` (with `target_modules` as actually adapted).
pub fn peft_config_json(cfg: &LoraConfig, targets: &[&str], base_model_name: &str) -> serde_json::Value {
    let alpha = if cfg.alpha.fract() == 0.0 && cfg.alpha < 1e15 {
        serde_json::json!(cfg.alpha as i64)
    } else {
        serde_json::json!(cfg.alpha)
    };
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": cfg.rank,
        "lora_alpha": alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created if needed),
/// as PEFT's `save_pretrained` does: tensors `base_model.model.<module>.lora_A.weight` `[r, in]`
/// and `…lora_B.weight` `[out, r]`, float32. Both files are written atomically. `cfg` must be the
/// config the adapters were built with (checked against their rank and scale).
pub fn save_peft_adapter(model: &CausalLm, cfg: &LoraConfig, base_model_name: &str, dir: &Path) -> Result<()> {
    cfg.validate()?;
    let factors = peft_factors(model);
    if factors.is_empty() {
        bail!("the model has no LoRA adapters to save (was apply_lora called?)");
    }
    let mut targets: Vec<&str> = Vec::new();
    let mut tensors = Vec::with_capacity(2 * factors.len());
    for f in factors {
        ensure!(
            f.rank == cfg.rank && (f.scale - cfg.scale()).abs() <= 1e-12 * cfg.scale(),
            "adapter on {} has rank {} and scale {}, but the LoRA config says rank {} and alpha/rank {}",
            f.module,
            f.rank,
            f.scale,
            cfg.rank,
            cfg.scale()
        );
        if !targets.contains(&f.name) {
            targets.push(f.name);
        }
        let prefix = format!("base_model.model.{}", f.module);
        tensors.push((format!("{prefix}.lora_A.weight"), vec![f.rank, f.d_in], f.lora_a));
        tensors.push((format!("{prefix}.lora_B.weight"), vec![f.d_out, f.rank], f.lora_b));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join("adapter_model.safetensors"), &safetensors_bytes(&tensors)?)?;
    let config = serde_json::to_string_pretty(&peft_config_json(cfg, &targets, base_model_name))?;
    write_atomic(&dir.join("adapter_config.json"), config.as_bytes())?;
    Ok(())
}

/// The fields of PEFT's `adapter_config.json` that decide what the tensors mean. Other fields
/// (task type, revision, …) are ignored.
#[derive(Deserialize)]
struct PeftConfigFile {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    rank_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    alpha_pattern: Option<serde_json::Map<String, serde_json::Value>>,
}

impl PeftConfigFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let c: PeftConfigFile =
            serde_json::from_str(&text).with_context(|| format!("{}: not a PEFT LoRA config", path.display()))?;
        let unsupported = |what: &str| anyhow::anyhow!("{}: {what} is not supported", path.display());
        ensure!(c.peft_type == "LORA", "{}: peft_type is {:?}, expected \"LORA\"", path.display(), c.peft_type);
        ensure!(c.r > 0 && c.lora_alpha > 0.0, "{}: r and lora_alpha must be > 0", path.display());
        if c.use_rslora {
            return Err(unsupported("use_rslora = true (scale alpha/√r)"));
        }
        if c.use_dora {
            return Err(unsupported("use_dora = true"));
        }
        if c.fan_in_fan_out {
            return Err(unsupported("fan_in_fan_out = true"));
        }
        if c.bias.as_deref().is_some_and(|b| b != "none") {
            return Err(unsupported("bias other than \"none\""));
        }
        if c.rank_pattern.as_ref().is_some_and(|m| !m.is_empty())
            || c.alpha_pattern.as_ref().is_some_and(|m| !m.is_empty())
        {
            return Err(unsupported("a per-module rank_pattern / alpha_pattern"));
        }
        Ok(c)
    }
}

/// Reads a PEFT LoRA folder (`adapter_config.json` + `adapter_model.safetensors`, F32/F16/BF16)
/// onto `model`, as [`apply_lora`] would have built it: base frozen, adapters trainable. Adapters
/// go where the file has `lora_A`/`lora_B` tensors (so `layers_to_transform` is honoured); every
/// tensor must be used and match the layer's shape. Returns the model and the matching config
/// (`dropout` is a training setting and is returned as 0). Errors name the file and tensor.
pub fn load_peft_adapter(model: CausalLm, dir: &Path) -> Result<(CausalLm, LoraConfig)> {
    ensure!(!has_adapters(&model), "the model already has LoRA adapters");
    let conf = PeftConfigFile::read(&dir.join("adapter_config.json"))?;
    let file = dir.join("adapter_model.safetensors");
    let mut tensors = super::weights::WeightMap::default();
    tensors.read_safetensors(&file)?;
    let (r, scale) = (conf.r, conf.lora_alpha / conf.r as f64);
    let mut targets: Vec<&'static str> = Vec::new();
    let model = map_linears(model.no_grad(), |module, name, lin| {
        let (an, bn) =
            (format!("base_model.model.{module}.lora_A.weight"), format!("base_model.model.{module}.lora_B.weight"));
        if !tensors.contains(&an) && !tensors.contains(&bn) {
            return Ok(lin);
        }
        let base = lin.weight.base();
        let [d_in, d_out] = base.dims();
        let ctx = || format!("in {}", file.display());
        let a = tensors.take(&an, &[r, d_in]).with_context(ctx)?; // PEFT [r, in]
        let b = tensors.take(&bn, &[d_out, r]).with_context(ctx)?; // PEFT [out, r]
        if !targets.contains(&name) {
            targets.push(name);
        }
        let factors = factors_like(&base, transpose(&a, r, d_in), transpose(&b, d_out, r), r);
        Ok(attach(lin, factors, scale))
    })?;
    let mut extra: Vec<&String> = tensors.names().collect();
    extra.sort();
    ensure!(
        extra.is_empty(),
        "{}: tensors not matching any decoder linear layer of this model: {extra:?}",
        file.display()
    );
    ensure!(!targets.is_empty(), "{}: no lora_A/lora_B tensors found", file.display());
    let cfg = LoraConfig {
        rank: r,
        alpha: conf.lora_alpha,
        dropout: 0.0,
        target_modules: LINEAR_MODULES.iter().filter(|m| targets.contains(m)).map(|m| m.to_string()).collect(),
    };
    Ok((model, cfg))
}
