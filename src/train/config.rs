//! `TrainConfig`: every option of `epa train`, in one place, as TOML.
//!
//! ```toml
//! [model]
//! path = "smollm2"            # HF folder, .gguf file, hub id, or `smollm2`
//!
//! [data]                      # see epa::data::DataConfig
//! paths = ["prefs.jsonl"]
//! weak = { k = 2 }
//! batch = { prompts_per_batch = 4 }
//!
//! [[loss.terms]]              # see epa::losses::LossConfig
//! name = "epa"
//! beta = 0.1
//!
//! [optim]
//! lr = 5e-6
//! max_steps = 100
//! ```
//! `epa config --print-default` prints the whole file with its defaults; `--set key=value`
//! overrides any key (dotted path, TOML value: `--set optim.lr=1e-5 --set loss.terms=[{name="dpo"}]`).

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::data::DataConfig;
use crate::device::{DeviceSpec, Precision};
use crate::losses::LossConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(default, deny_unknown_fields)]
/// The configuration of a training run (`epa train --config`, `epa config --print-default`).
pub struct TrainConfig {
    /// The policy to train (and, unless `reference.path` says otherwise, the reference).
    pub model: ModelSection,
    /// Training data: files, shape, field names, grouping, truncation, weak negatives, batching.
    pub data: DataConfig,
    /// The loss: one or more weighted terms.
    pub loss: LossConfig,
    /// AdamW, learning-rate schedule, clipping, accumulation, length of the run.
    pub optim: OptimSection,
    /// What is trained: every weight (`full`) or LoRA adapters.
    pub adapter: AdapterSection,
    /// Where the reference log-probs come from.
    pub reference: ReferenceSection,
    /// Held-out evaluation.
    pub eval: EvalSection,
    /// Output folder, checkpoints, export, progress bar.
    pub output: OutputSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// `[model]`: the policy and where it runs.
pub struct ModelSection {
    /// A Hugging Face folder, a `.gguf` file, a hub id (`org/name`) or `smollm2`.
    pub path: String,
    /// Where the model runs: `cpu`, `cuda`, `cuda:N` or `wgpu` (GPU backends need the binary built
    /// with the `cuda` / `wgpu` cargo feature).
    pub device: DeviceSpec,
    /// Compute dtype: `float32`, or `bfloat16` (bf16 weights and activations in the forward pass,
    /// float32 master weights, AdamW state, log-softmax and losses; for GPUs: the CPU emulates it slowly).
    pub dtype: Precision,
    /// Train only the last N decoder layers (and the final norm); 0 = all layers.
    pub train_last_layers: usize,
    /// Score every candidate of a prompt in one row sharing the prompt (exact; faster).
    pub prefix_sharing: bool,
    /// Recompute memory-bound activations in the backward pass (less memory, more compute).
    pub gradient_checkpointing: bool,
    /// The fused log-prob head on the CPU (float32): log-probs of the response tokens computed in
    /// chunks with a hand-written backward, never the whole `[tokens × vocabulary]` logits
    /// (`src/model/head.rs`); `false` takes logits → log-softmax → gather.
    pub fused_head: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: crate::model::load::SMOLLM2.into(),
            device: DeviceSpec::Cpu,
            dtype: Precision::Float32,
            train_last_layers: 0,
            prefix_sharing: true,
            gradient_checkpointing: false,
            fused_head: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
/// Learning-rate schedule after warm-up.
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Linear decay to 0.
    Linear,
    /// Cosine decay to 0.
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
/// What a non-finite loss does.
pub enum OnNonFinite {
    /// Stop with an error naming the step.
    Stop,
    /// Skip the batch (no update) and count it.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// `[optim]`: AdamW, schedule, steps.
pub struct OptimSection {
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Decoupled weight decay (AdamW), on weights only: biases and norm weights are not decayed, as in
    /// transformers' `Trainer` (set `decay_bias_and_norm` to decay them too).
    pub weight_decay: f64,
    /// Decay biases and norm weights as well (transformers never does; epa did before this switch).
    pub decay_bias_and_norm: bool,
    /// Linear warm-up steps, then `schedule` down to 0 at the last step.
    pub warmup_steps: usize,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
    /// Clip the global gradient norm (over all parameters, like torch's clip_grad_norm_); 0 = off.
    pub max_grad_norm: f64,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Optimiser steps; 0 = `epochs` full passes.
    pub max_steps: usize,
    /// Passes over the data when `max_steps` = 0.
    pub epochs: usize,
    /// Seed for initialisation (LoRA) and everything random outside the data pipeline.
    pub seed: u64,
    /// What a non-finite loss does: stop with an error, or skip the step.
    pub on_non_finite: OnNonFinite,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 5e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_bias_and_norm: false,
            warmup_steps: 0,
            schedule: Schedule::Linear,
            max_grad_norm: 1.0,
            grad_accum: 1,
            max_steps: 0,
            epochs: 1,
            seed: 0,
            on_non_finite: OnNonFinite::Stop,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
/// Which parameters train.
pub enum AdapterMethod {
    /// Train every (unfrozen) weight.
    Full,
    /// Train LoRA adapters only; the base stays frozen.
    Lora,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// `[adapter]`: full fine-tuning or LoRA.
pub struct AdapterSection {
    /// `full` or `lora`.
    pub method: AdapterMethod,
    /// rank, alpha, dropout (0 only), target_modules (q_proj … down_proj, or "all-linear").
    pub lora: crate::model::lora::LoraConfig,
}

impl Default for AdapterSection {
    fn default() -> Self {
        Self { method: AdapterMethod::Full, lora: Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
/// Where reference log-probs come from.
pub enum ReferenceMode {
    /// A frozen copy of the initial policy in memory.
    Frozen,
    /// Reference log-probs computed once, cached on disk (keyed by weights + data + tokens), reused
    /// across runs and loss types; no reference model in memory while training.
    Cached,
    /// The policy with its LoRA adapters switched off (needs `adapter.method = "lora"`): no
    /// second copy of the weights in memory.
    LoraOff,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// `[reference]`: the reference model π_ref.
pub struct ReferenceSection {
    /// `frozen`, `cached` or `lora_off`.
    pub mode: ReferenceMode,
    /// Reference model (default: the same as `model.path`).
    pub path: Option<String>,
    /// Where `cached` keeps its files (default: `<output.dir>/../.ref-cache`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for ReferenceSection {
    fn default() -> Self {
        Self { mode: ReferenceMode::Cached, path: None, cache_dir: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Default)]
#[serde(default, deny_unknown_fields)]
/// `[eval]`: held-out preference data.
pub struct EvalSection {
    /// Held-out preference files (same format options as `data`); empty = no evaluation.
    pub paths: Vec<PathBuf>,
    /// Evaluate every N optimiser steps (and at the end); 0 = only at the end.
    pub every_steps: usize,
    /// At most this many held-out groups.
    pub max_groups: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// `[output]`: checkpoints, metrics, export.
pub struct OutputSection {
    /// Output folder: config.toml, metrics.jsonl, checkpoints, the exported model.
    pub dir: PathBuf,
    /// Write a checkpoint every N optimiser steps (0 = only at the end).
    pub save_every_steps: usize,
    /// Keep the newest N checkpoints.
    pub keep_last: usize,
    /// Write a checkpoint at the end of the run (false: only `save_every_steps` ones; for sweeps
    /// that keep just the metrics and the exported model).
    pub final_checkpoint: bool,
    /// Write the final model as a Hugging Face folder (`<dir>/final`).
    pub export: bool,
    /// Show a progress bar (off when stderr is not a terminal).
    pub progress: bool,
    /// Delete an earlier run found in `dir` (metrics, checkpoints, exports) and start afresh, as
    /// Hugging Face's `overwrite_output_dir`. Without it a fresh run refuses a folder holding one.
    pub overwrite: bool,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            dir: "runs/train".into(),
            save_every_steps: 0,
            keep_last: 2,
            final_checkpoint: true,
            export: true,
            progress: true,
            overwrite: false,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file, applies `key=value` overrides, validates.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let value = read_with_overrides(path, overrides)?;
        let where_ = path.map(|p| p.display().to_string()).unwrap_or_else(|| "--set".into());
        let cfg: TrainConfig = value.try_into().with_context(|| format!("in config {where_}"))?;
        cfg.validate().with_context(|| format!("in config {where_}"))?;
        Ok(cfg)
    }

    /// This configuration with `key=value` overrides applied as `--set` applies them (to its TOML
    /// form), then validated, as [`TrainConfig::load`] validates.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        let mut value = toml::Value::try_from(&self).context("serialising the configuration")?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let cfg: TrainConfig = value.try_into().context("in config --set")?;
        cfg.validate().context("in config --set")?;
        Ok(cfg)
    }

    /// Checks every value (ranges, files exist, loss terms, LoRA) and names the key at fault.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.data.paths.is_empty(), "data.paths is empty: give at least one preference file");
        for p in self.data.paths.iter().chain(&self.eval.paths) {
            ensure!(p.exists(), "data file {} does not exist", p.display());
        }
        self.validate_settings()
    }

    /// [`Self::validate`] without the data files: what a [`super::Trainer`] given its groups in
    /// memory checks.
    pub fn validate_settings(&self) -> Result<()> {
        let o = &self.optim;
        ensure!(o.lr.is_finite() && o.lr > 0.0, "optim.lr must be > 0 (got {})", o.lr);
        ensure!((0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2), "optim.beta1/beta2 must be in [0, 1)");
        ensure!(o.eps > 0.0, "optim.eps must be > 0");
        ensure!(o.weight_decay >= 0.0, "optim.weight_decay must be ≥ 0");
        ensure!(o.max_grad_norm >= 0.0, "optim.max_grad_norm must be ≥ 0 (0 = off)");
        ensure!(o.grad_accum >= 1, "optim.grad_accum must be ≥ 1");
        ensure!(o.max_steps > 0 || o.epochs > 0, "set optim.max_steps or optim.epochs");
        ensure!(self.output.keep_last >= 1, "output.keep_last must be ≥ 1");
        self.loss.validate().context("in [loss]")?;
        if self.adapter.method == AdapterMethod::Lora {
            self.adapter.lora.validate().context("in [adapter.lora]")?;
        } else if self.reference.mode == ReferenceMode::LoraOff {
            bail!("reference.mode = \"lora_off\" needs adapter.method = \"lora\"");
        }
        Ok(())
    }

    /// The default configuration as TOML, every key preceded by its documentation.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&TrainConfig::default()).expect("default config serialises");
        let schema = serde_json::to_value(schemars::schema_for!(TrainConfig)).expect("schema serialises");
        let (annotated, _) = super::docs::annotate(&body, &schema);
        format!(
            "# epa train — default configuration. Every key is optional; override any with\n\
             # `epa train --set section.key=value`. Loss terms (`[[loss.terms]]`, `name = ...`): {}.\n\n{annotated}",
            crate::losses::LOSS_NAMES.join(", ")
        )
    }
}

/// A TOML file (or an empty table without one) with `key=value` overrides applied: the raw value a
/// config type is read from (`epa train`, `epa iterate`).
pub fn read_with_overrides(path: Option<&Path>, overrides: &[String]) -> Result<toml::Value> {
    let mut value: toml::Value = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: not valid TOML", p.display()))?
        }
        None => toml::Value::Table(Default::default()),
    };
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    Ok(value)
}

/// `a.b.c=value`: value parsed as TOML (falls back to a string).
pub fn apply_override(root: &mut toml::Value, kv: &str) -> Result<()> {
    let (key, raw) = kv.split_once('=').with_context(|| format!("--set {kv:?}: expected key=value"))?;
    let key = key.trim();
    ensure!(!key.is_empty(), "--set {kv:?}: empty key");
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let table =
            cur.as_table_mut().with_context(|| format!("--set {key}: `{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        cur = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}
