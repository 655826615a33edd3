//! The experiment's configuration and its presets (`tiny`, `demo`, `full`). Serialised into the
//! report, so every number can be traced to the settings that produced it.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::gold::GoldRewardConfig;

/// The whole experiment: reference model, data generation, gold reward, training, methods, seeds
/// and evaluation (the TOML of `epa demo --print-config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Preset this configuration started from.
    pub preset: String,
    /// The reference model (HF folder, .gguf, `smollm2`, hub id): it writes the data and every policy
    /// starts from it.
    pub model: String,
    /// How the preference data is generated and labelled.
    pub data: DataGenConfig,
    /// Weights of the gold reward that labels the data and judges the policies.
    pub gold: GoldRewardConfig,
    /// Training settings shared by every method and seed.
    pub train: TrainSettings,
    /// The methods compared; the first whose loss is `dpo` is the baseline.
    pub methods: Vec<Method>,
    /// Training seeds; every method runs once per seed on the same data.
    pub seeds: Vec<u64>,
    /// How the policies are evaluated on the held-out prompts.
    pub eval: EvalSettings,
}

/// How the preference data is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataGenConfig {
    /// Training prompts (topics); at least 2.
    pub train_prompts: usize,
    /// Held-out prompts the policies are evaluated on; at least 2 (the intervals resample them).
    pub held_out_prompts: usize,
    /// K responses sampled per prompt from the reference model.
    pub samples_per_prompt: usize,
    /// Most new tokens per sampled answer (data and evaluation samples).
    pub max_new_tokens: usize,
    /// Sampling temperature of the answers, data and evaluation (0 = greedy).
    pub temperature: f32,
    /// Nucleus sampling mass of the answers (1 = off).
    pub top_p: f32,
    /// τ of the labels: the ranking of a prompt's K responses is drawn from Plackett-Luce (Bradley-Terry
    /// for K = 2) on R/τ, so the true reward in the labels' units is r* = R/τ.
    pub label_temperature: f64,
    /// Sequences per generation batch.
    pub batch: usize,
    /// Seed of the topic split, the sampled answers and the label draws (held-out rows use seed + 1,
    /// evaluation samples seed + 7777).
    pub seed: u64,
}

/// What every run shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Optimiser steps per run (`optim.max_steps`).
    pub steps: usize,
    /// Prompts per training batch (`data.batch.prompts_per_batch`).
    pub prompts_per_batch: usize,
    /// Peak learning rate (`optim.lr`).
    pub lr: f64,
    /// Learning-rate warm-up steps (`optim.warmup_steps`).
    pub warmup_steps: usize,
    /// β of every loss.
    pub beta: f64,
    /// Train only the top N decoder layers (0 = every layer; ignored with `lora_rank > 0`).
    pub train_last_layers: usize,
    /// LoRA rank on the attention projections (0 = no LoRA).
    pub lora_rank: usize,
    /// Further `epa train --set` overrides applied to every run.
    pub set: Vec<String>,
}

/// One method of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// Name in the report.
    pub name: String,
    /// Loss term (`epa train` name: dpo, epa, ipo…).
    pub loss: String,
    /// Strong negatives per prompt (rejected answers to it; 1 for pairwise losses).
    pub strong: usize,
    /// Weak negatives per prompt (answers to other prompts of the batch).
    pub weak: usize,
    /// Extra `--set` overrides for this method only.
    #[serde(default)]
    pub set: Vec<String>,
}

/// How policies are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    /// Samples per held-out prompt from each policy (≤ data.samples_per_prompt: sample j is compared
    /// with the reference's sample j for the win rate).
    pub samples_per_prompt: usize,
    /// Evaluate this many times along each run, evenly spaced (the last at the end): the points of the
    /// reward–KL frontier.
    pub points: usize,
    /// Bootstrap resamples for the 95% intervals.
    pub bootstrap: usize,
}

/// The starting configurations of `epa demo --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// CI: the tiny fixture model, seconds.
    Tiny,
    /// SmolLM2, about ten minutes on two cores, one seed.
    Demo,
    /// The demo with three seeds and more bootstrap resamples: the verdict.
    Full,
}

impl Preset {
    /// The preset's name (`tiny`, `demo`, `full`), as recorded in [`DemoConfig::preset`].
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Demo => "demo",
            Preset::Full => "full",
        }
    }
}

impl DemoConfig {
    /// A preset: `tiny` (CI: the tiny fixture model, seconds), `demo` (SmolLM2, about ten
    /// minutes on two cores, one seed), `full` (three seeds, more prompts: the verdict).
    pub fn preset(preset: Preset) -> Self {
        let name = preset.name();
        let methods = |strong: usize, weak: usize| {
            vec![
                Method { name: "dpo".into(), loss: "dpo".into(), strong: 1, weak: 0, set: vec![] },
                Method { name: "epa-strong".into(), loss: "epa".into(), strong, weak: 0, set: vec![] },
                Method { name: "epa-weak".into(), loss: "epa".into(), strong, weak, set: vec![] },
            ]
        };
        match preset {
            Preset::Tiny => DemoConfig {
                preset: name.into(),
                model: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama").into(),
                data: DataGenConfig {
                    train_prompts: 8,
                    held_out_prompts: 4,
                    samples_per_prompt: 3,
                    max_new_tokens: 6,
                    temperature: 1.0,
                    top_p: 0.95,
                    label_temperature: 0.25,
                    batch: 32,
                    seed: 0,
                },
                gold: GoldRewardConfig::default(),
                train: TrainSettings {
                    steps: 2,
                    prompts_per_batch: 4,
                    lr: 1e-3,
                    warmup_steps: 0,
                    beta: 0.1,
                    train_last_layers: 0,
                    lora_rank: 0,
                    set: vec![],
                },
                methods: methods(2, 2),
                seeds: vec![1, 2],
                eval: EvalSettings { samples_per_prompt: 2, points: 2, bootstrap: 200 },
            },
            Preset::Demo => DemoConfig {
                preset: name.into(),
                model: crate::model::load::SMOLLM2.into(),
                data: DataGenConfig {
                    train_prompts: 64,
                    held_out_prompts: 32,
                    samples_per_prompt: 4,
                    max_new_tokens: 24,
                    temperature: 1.0,
                    top_p: 0.95,
                    label_temperature: 0.25,
                    batch: 64,
                    seed: 0,
                },
                gold: GoldRewardConfig::default(),
                train: TrainSettings {
                    steps: 16,
                    prompts_per_batch: 8,
                    lr: 2e-4,
                    warmup_steps: 2,
                    beta: 0.1,
                    train_last_layers: 4,
                    lora_rank: 0,
                    set: vec![],
                },
                methods: methods(3, 2),
                seeds: vec![1],
                eval: EvalSettings { samples_per_prompt: 2, points: 2, bootstrap: 1000 },
            },
            // The demo's data and runs with two more seeds: `--preset full` into the demo's output
            // folder reuses what the demo computed and adds the other seeds.
            Preset::Full => {
                let mut c = Self::preset(Preset::Demo);
                c.preset = name.into();
                c.seeds = vec![1, 2, 3];
                c.eval.bootstrap = 2000;
                c
            }
        }
    }

    /// Applies `key=value` overrides (TOML values, dotted keys) as `epa train --set` does; the caller
    /// validates the result.
    pub fn with_overrides(self, sets: &[String]) -> Result<Self> {
        if sets.is_empty() {
            return Ok(self);
        }
        let mut root = toml::Value::try_from(&self)?;
        for kv in sets {
            crate::train::config::apply_override(&mut root, kv)?;
        }
        root.try_into().map_err(|e| anyhow::anyhow!("demo --set: {e}"))
    }

    /// Checks that the settings can run together: enough prompts and answers, fewer strong
    /// negatives than answers per prompt, evaluation samples within the data's, valid gold weights.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        ensure!(d.train_prompts >= 2, "data.train_prompts must be ≥ 2");
        ensure!(d.held_out_prompts >= 2, "data.held_out_prompts must be ≥ 2 (confidence intervals resample them)");
        ensure!(d.samples_per_prompt >= 2, "data.samples_per_prompt must be ≥ 2 (a preference needs two answers)");
        ensure!(d.max_new_tokens >= 1, "data.max_new_tokens must be ≥ 1");
        ensure!(d.label_temperature > 0.0 && d.label_temperature.is_finite(), "data.label_temperature must be > 0");
        ensure!(d.batch >= 1, "data.batch must be ≥ 1");
        ensure!(self.train.steps >= 1, "train.steps must be ≥ 1");
        ensure!(!self.methods.is_empty(), "methods: at least one");
        ensure!(!self.seeds.is_empty(), "seeds: at least one");
        for m in &self.methods {
            ensure!(m.strong >= 1, "method {}: strong must be ≥ 1", m.name);
            ensure!(
                m.strong < d.samples_per_prompt,
                "method {}: {} strong negatives asked for, but each prompt has {} answers (one is the positive)",
                m.name,
                m.strong,
                d.samples_per_prompt
            );
        }
        ensure!(
            (1..=d.samples_per_prompt).contains(&self.eval.samples_per_prompt),
            "eval.samples_per_prompt must be in 1..={} (data.samples_per_prompt)",
            d.samples_per_prompt
        );
        ensure!(self.eval.points >= 1, "eval.points must be ≥ 1");
        self.gold.validate()
    }
}
