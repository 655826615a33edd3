//! The experiment's configuration and its presets (`tiny`, `demo`, `full`, `study`). Serialised into
//! the report, so every number can be traced to the settings that produced it.

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
    /// The methods compared; each is compared with the first method whose loss is `dpo` and whose
    /// β is its own.
    pub methods: Vec<Method>,
    /// Further comparisons, `[method, baseline]` by name (e.g. online EPA against offline EPA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<[String; 2]>,
    /// Training seeds; every method runs once per seed on the same data.
    pub seeds: Vec<u64>,
    /// How the policies are evaluated on the held-out prompts.
    pub eval: EvalSettings,
    /// The power calculation that sized the experiment (the `study` preset's), checked in the report
    /// against the intervals the run actually reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerPlan>,
}

/// An a-priori power calculation: a pilot's standard error of the main comparison (gold reward at
/// matched KL, method − DPO) on `pilot_prompts × pilot_seeds` units, scaled as 1/√units to this
/// design, gives the smallest effect detected with probability `power` by a two-sided test at 5 %:
/// MDE = (z₀.₉₇₅ + z_power)·SE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerPlan {
    /// Where the pilot's numbers come from.
    pub pilot: String,
    /// The pilot's bootstrap standard error of the comparison (its 95 % interval's width / 3.92).
    pub pilot_se: f64,
    /// Held-out prompts of the pilot.
    pub pilot_prompts: usize,
    /// Seeds of the pilot.
    pub pilot_seeds: usize,
    /// The effect (gold reward units) the design must detect.
    pub effect: f64,
    /// The probability of detecting it (e.g. 0.8).
    pub power: f64,
}

impl PowerPlan {
    /// z₀.₉₇₅ + z_power: the number of standard errors an effect must span to be detected.
    pub fn z_sum(&self) -> f64 {
        1.959_963_984_540_054 + crate::eval::stats::normal_quantile(self.power)
    }

    /// The standard error expected with `prompts × seeds` units.
    pub fn expected_se(&self, prompts: usize, seeds: usize) -> f64 {
        self.pilot_se * ((self.pilot_prompts * self.pilot_seeds) as f64 / (prompts * seeds).max(1) as f64).sqrt()
    }

    /// The prompt × seed units needed to detect `effect` with probability `power`.
    pub fn units_needed(&self) -> f64 {
        let se_needed = self.effect / self.z_sum();
        (self.pilot_prompts * self.pilot_seeds) as f64 * (self.pilot_se / se_needed).powi(2)
    }

    /// The minimum detectable effect of a comparison whose standard error is `se`.
    pub fn mde(&self, se: f64) -> f64 {
        self.z_sum() * se
    }
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
    /// β of this method's loss and of its implicit reward (default: `train.beta`). Methods are
    /// compared with the DPO baseline of the same β.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Train online instead: rounds of sampling from the current policy, labelling and training
    /// ([`super::online`]); `None`: on the reference's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineMethod>,
    /// Extra `--set` overrides for this method only.
    #[serde(default)]
    pub set: Vec<String>,
}

/// How an online method trains: `train.steps` split evenly over `rounds`; round r samples K =
/// `data.samples_per_prompt` answers from the policy of round r for its share of the training
/// prompts (the r-th of `rounds` equal slices, so the sampling over the run equals the offline data's
/// and, with the same steps, so does the compute), labels them as the data was labelled
/// (Plackett-Luce on R/τ), and trains from that policy against the initial reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineMethod {
    /// Rounds of sample → label → train (≥ 1; `train.steps` must be a multiple).
    pub rounds: usize,
    /// The negatives of a prompt: `best_vs_rest` (every other answer, EPA's strong negatives) or
    /// `best_vs_worst` (the last-ranked answer: online DPO's pair).
    pub pairing: crate::online::Pairing,
}

impl Method {
    /// A method with the shared β and no overrides.
    pub fn new(name: &str, loss: &str, strong: usize, weak: usize) -> Self {
        Method { name: name.into(), loss: loss.into(), strong, weak, beta: None, online: None, set: vec![] }
    }

    /// The β this method trains and is judged with.
    pub fn beta(&self, train: &TrainSettings) -> f64 {
        self.beta.unwrap_or(train.beta)
    }
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
    /// Training prompts whose answers are also scored at every point, for the slope-1 metrics on
    /// the data the policy was fitted to (how close training came to the preference model's
    /// optimum, apart from how it generalises); 0 = none.
    #[serde(default)]
    pub fit_prompts: usize,
}

/// The starting configurations of `epa demo --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// CI: the tiny fixture model, seconds.
    Tiny,
    /// SmolLM2, about ten minutes on two cores, one seed.
    Demo,
    /// The demo with three seeds and more bootstrap resamples.
    Full,
    /// The study: every topic, K = 8 answers, two β, five seeds, trained long enough for the learned
    /// reward to reach the true reward's scale; sized by a power calculation (hours on a CPU).
    Study,
}

impl Preset {
    /// The preset's name (`tiny`, `demo`, `full`), as recorded in [`DemoConfig::preset`].
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Demo => "demo",
            Preset::Full => "full",
            Preset::Study => "study",
        }
    }
}

impl DemoConfig {
    /// A preset: `tiny` (CI: the tiny fixture model, seconds), `demo` (SmolLM2, about ten
    /// minutes on two cores, one seed), `full` (three seeds), `study` (see [`Preset::Study`]).
    pub fn preset(preset: Preset) -> Self {
        let name = preset.name();
        let methods = |strong: usize, weak: usize| {
            vec![
                Method::new("dpo", "dpo", 1, 0),
                Method::new("epa-strong", "epa", strong, 0),
                Method::new("epa-weak", "epa", strong, weak),
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
                methods: {
                    let mut m = methods(2, 2);
                    m.push(Method {
                        online: Some(OnlineMethod { rounds: 2, pairing: crate::online::Pairing::BestVsRest }),
                        ..Method::new("online-epa", "epa", 2, 2)
                    });
                    m
                },
                compare: vec![["online-epa".into(), "epa-weak".into()]],
                seeds: vec![1, 2],
                eval: EvalSettings { samples_per_prompt: 2, points: 2, bootstrap: 200, fit_prompts: 4 },
                // The study's plan, so CI exercises the power report (the tiny model's numbers mean
                // nothing).
                power: Self::study().power,
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
                compare: vec![],
                seeds: vec![1],
                eval: EvalSettings { samples_per_prompt: 2, points: 2, bootstrap: 1000, fit_prompts: 0 },
                power: None,
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
            Preset::Study => Self::study(),
        }
    }

    /// The study (issue 16), sized as follows.
    ///
    /// - **Power.** `results/demo-full` (3 seeds × 32 held-out prompts, K = 4) measured the main
    ///   comparison, epa-weak − dpo in gold reward at matched KL, as 0.336 [0.035, 0.521]: a standard
    ///   error of 0.124 on 96 prompt × seed units, while a one-seed rerun of the demo found −0.02.
    ///   Detecting 0.2 (a fifth of the within-prompt spread of R) with 80 % power at 5 % needs
    ///   SE ≤ 0.2 / 2.80 = 0.071, i.e. 96 × (0.124 / 0.071)² ≈ 290 units: every topic
    ///   (150 train / 67 held out) × 5 seeds = 335 units (expected SE 0.067, MDE 0.19). The report
    ///   recomputes the MDE from the intervals the run reaches.
    /// - **The regime of the claim.** The implicit reward β·log(π_θ/π_ref) can only match r* = R/τ
    ///   when its spread is reachable: the demo's τ = 0.25 made Var_k(r*) ≈ 13 while learned rewards
    ///   stayed near ±1. A pilot at τ = 1 (Var_k(r*) ≈ 0.73) made the labels nearly uninformative:
    ///   the chosen answer was the gold-best of 8 in 23 % of prompts (chance: 12.5 %), and DPO's
    ///   held-out Pearson(r, r*) stayed at −0.13…0.08 while its rewards on training prompts spread
    ///   far beyond r*'s (ε̂ up to 4.8 against Var(r*) ≈ 0.7;
    ///   `results/study-pilot-tau1/`). τ = 0.5 doubles the labels' signal and keeps Var_k(r*) ≈ 2.9
    ///   (SD 1.7) within reach: answer log-ratios spread by 1.7/β nats, 6.8 at β = 0.25 (the pilot's
    ///   DPO spread that far) and 1.7 at β = 1. Training runs ~5 epochs of the 150 training prompts
    ///   (96 steps × 8 prompts), evaluated at 6 points for the frontier, and the fit is also
    ///   measured on 16 training prompts (`eval.fit_prompts`).
    /// - **Methods**, at both β: DPO on best vs a random other answer (UltraFeedback-binarized's
    ///   construction); DPO on best vs each of the 7 others (the "split into pairs" baseline, the mean
    ///   of 7 pairwise losses per prompt); EPA with the 7 strong negatives; EPA with 7 strong + 4 weak.
    ///   At β = 0.25 also online EPA (7 strong + 4 weak) and online DPO (best vs worst), 3 rounds each
    ///   at the offline runs' sampling and steps ([`super::online`]), compared with offline EPA and with
    ///   each other.
    fn study() -> Self {
        let mut methods = Vec::new();
        for beta in [0.25, 1.0] {
            let b = |name: &str| format!("{name}-b{beta}");
            for (name, loss, strong, weak) in [
                ("dpo", "dpo", 1, 0),
                ("dpo-pairs", "dpo", 7, 0),
                ("epa-strong", "epa", 7, 0),
                ("epa-weak", "epa", 7, 4),
            ] {
                methods.push(Method { beta: Some(beta), ..Method::new(&b(name), loss, strong, weak) });
            }
        }
        // Online EPA and online DPO at the first β, with the offline runs' sampling and steps.
        use crate::online::Pairing;
        let online = |name: &str, loss: &str, strong: usize, weak: usize, pairing: Pairing| Method {
            beta: Some(0.25),
            online: Some(OnlineMethod { rounds: 3, pairing }),
            ..Method::new(name, loss, strong, weak)
        };
        methods.push(online("online-epa-b0.25", "epa", 7, 4, Pairing::BestVsRest));
        methods.push(online("online-dpo-b0.25", "dpo", 1, 0, Pairing::BestVsWorst));
        let pair = |a: &str, b: &str| [a.to_string(), b.to_string()];
        let compare = vec![pair("online-epa-b0.25", "epa-weak-b0.25"), pair("online-epa-b0.25", "online-dpo-b0.25")];
        DemoConfig {
            preset: Preset::Study.name().into(),
            model: crate::model::load::SMOLLM2.into(),
            data: DataGenConfig {
                train_prompts: 150,
                held_out_prompts: 67,
                samples_per_prompt: 8,
                max_new_tokens: 24,
                temperature: 1.0,
                top_p: 0.95,
                label_temperature: 0.5,
                batch: 64,
                seed: 0,
            },
            gold: GoldRewardConfig::default(),
            train: TrainSettings {
                steps: 96,
                prompts_per_batch: 8,
                lr: 2e-4,
                warmup_steps: 4,
                beta: 0.25,
                train_last_layers: 4,
                lora_rank: 0,
                set: vec![],
            },
            methods,
            compare,
            seeds: vec![1, 2, 3, 4, 5],
            eval: EvalSettings { samples_per_prompt: 2, points: 6, bootstrap: 2000, fit_prompts: 16 },
            power: Some(PowerPlan {
                pilot: "results/demo-full: epa-weak − dpo, gold reward at matched KL, 0.336 [0.035, 0.521]".into(),
                pilot_se: 0.124,
                pilot_prompts: 32,
                pilot_seeds: 3,
                effect: 0.2,
                power: 0.8,
            }),
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
        for [a, b] in &self.compare {
            for n in [a, b] {
                ensure!(self.methods.iter().any(|m| &m.name == n), "compare: no method is named {n:?}");
            }
        }
        ensure!(!self.seeds.is_empty(), "seeds: at least one");
        let mut names = std::collections::BTreeSet::new();
        for m in &self.methods {
            ensure!(names.insert(&m.name), "methods: the name {:?} is used twice (it names the run folders)", m.name);
            ensure!(m.strong >= 1, "method {}: strong must be ≥ 1", m.name);
            let b = m.beta(&self.train);
            ensure!(b > 0.0 && b.is_finite(), "method {}: beta must be > 0", m.name);
            if let Some(o) = &m.online {
                ensure!(
                    o.rounds >= 1 && self.train.steps.is_multiple_of(o.rounds) && self.train.steps / o.rounds >= 1,
                    "method {}: online.rounds ({}) must divide train.steps ({})",
                    m.name,
                    o.rounds,
                    self.train.steps
                );
                ensure!(
                    d.train_prompts >= o.rounds,
                    "method {}: online.rounds ({}) must be ≤ data.train_prompts ({}): each round samples its own prompts",
                    m.name,
                    o.rounds,
                    d.train_prompts
                );
            }
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
        ensure!(
            self.eval.fit_prompts <= d.train_prompts,
            "eval.fit_prompts must be ≤ data.train_prompts ({})",
            d.train_prompts
        );
        if let Some(p) = &self.power {
            ensure!(p.pilot_se > 0.0 && p.effect > 0.0, "power: pilot_se and effect must be > 0");
            ensure!(p.power > 0.0 && p.power < 1.0, "power.power must be in (0, 1)");
            ensure!(p.pilot_prompts >= 1 && p.pilot_seeds >= 1, "power: pilot_prompts and pilot_seeds must be ≥ 1");
        }
        self.gold.validate()
    }
}
