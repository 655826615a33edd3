//! `epa iterate`: online (iterative) preference optimisation — the paper's stated future work.
//!
//! Each round: sample K answers per prompt from the current policy (the KV-cached sampler), score
//! them with a judge (a reward model or the gold reward, as `epa eval` does), form one group per
//! prompt (the best answer as the positive; the others as strong negatives — `best_vs_rest`, EPA's
//! many negatives — or only the worst — `best_vs_worst`, online DPO's pair), add weak negatives
//! from other prompts as the training config says, and train `steps_per_round` optimiser steps
//! with [`Trainer`]; the exported policy starts the next round. The reference stays the initial
//! model (or is refreshed to each round's starting policy: `reference = "previous"`).
//!
//! Every round writes `<out>/round-NNN/` (the sampled answers with their rewards, the round's
//! training run, its exported policy, `round.json`); a rerun reuses every finished round, so a run
//! can stop between rounds and continue. Compute is counted as sampled tokens + trained tokens.
//!
//! ```toml
//! [online]
//! prompts = "prompts.jsonl"   # rows with a `prompt` (string or messages), `topic` for the gold judge
//! judge = "rm:path/to/reward-model"
//! rounds = 3
//! samples_per_prompt = 4
//! steps_per_round = 16
//! [train]                      # an `epa train` config: the initial policy, the loss, the optimiser…
//! model = { path = "smollm2" }
//! loss = { terms = [{ name = "epa", beta = 0.1 }] }
//! ```

use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::{ChatTemplateUse, GroupStore, TokenCandidate, TokenGroup};
use crate::eval::judge::{Judge, JudgeSpec, LoadedJudge};
use crate::eval::prompts::{EvalPrompt, read_prompts};
use crate::eval::{encode_prompts, sample};
use crate::model::generate::SampleConfig;
use crate::model::load::load_model;
use crate::model::save::write_atomic;
use crate::train::{TrainConfig, Trainer, training_device};

/// Which sampled answers become a prompt's negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pairing {
    /// The best answer against every other answer (EPA's strong negatives).
    #[default]
    BestVsRest,
    /// The best answer against the worst (online DPO's pair).
    BestVsWorst,
}

/// What each round's training treats as the reference model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceChoice {
    /// The initial policy (or `train.reference.path`) in every round.
    #[default]
    Initial,
    /// The policy each round starts from.
    Previous,
}

/// `[online]`: the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OnlineSection {
    /// Prompts (JSONL, JSON or Parquet rows with a `prompt`; the gold judge needs a `topic`).
    pub prompts: PathBuf,
    /// `rm:MODEL` (a reward-model folder or hub id) or `gold`.
    pub judge: String,
    /// Rounds of sample → judge → train.
    pub rounds: usize,
    /// Answers sampled per prompt and round (K ≥ 2).
    pub samples_per_prompt: usize,
    /// Optimiser steps per round.
    pub steps_per_round: usize,
    /// Which answers are a prompt's negatives.
    pub pairing: Pairing,
    /// The reference model of each round.
    pub reference: ReferenceChoice,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    pub top_p: f32,
    /// New tokens per answer at most.
    pub max_new_tokens: usize,
    /// Sequences per generation batch (and conversations per reward-model pass).
    pub batch: usize,
    /// Seed of round r's sampling: `seed + r`.
    pub seed: u64,
    /// Which prompts go through the policy's chat template.
    pub chat_template: ChatTemplateUse,
    /// Output folder: `round-NNN/` per round and `iterate.json`.
    pub out: PathBuf,
}

impl Default for OnlineSection {
    fn default() -> Self {
        OnlineSection {
            prompts: PathBuf::new(),
            judge: "gold".into(),
            rounds: 2,
            samples_per_prompt: 4,
            steps_per_round: 8,
            pairing: Pairing::BestVsRest,
            reference: ReferenceChoice::Initial,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 48,
            batch: 16,
            seed: 0,
            chat_template: ChatTemplateUse::Always,
            out: "runs/iterate".into(),
        }
    }
}

/// The `epa iterate` configuration: `[online]` and the `[train]` config every round trains with
/// (its `model.path` is the initial policy; `data.paths`, `optim.max_steps` and `output` are set per
/// round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IterateConfig {
    /// The rounds.
    #[serde(default)]
    pub online: OnlineSection,
    /// The training of each round.
    #[serde(default)]
    pub train: TrainConfig,
}

impl IterateConfig {
    /// Reads a TOML file (or nothing) and applies `key=value` overrides (`online.rounds=3`,
    /// `train.optim.lr=1e-5`).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let value = crate::train::config::read_with_overrides(path, overrides)?;
        let where_ = path.map(|p| p.display().to_string()).unwrap_or_else(|| "--set".into());
        let cfg: IterateConfig = value.try_into().with_context(|| format!("in config {where_}"))?;
        cfg.validate().with_context(|| format!("in config {where_}"))?;
        Ok(cfg)
    }

    /// Checks `[online]` (the training config is checked per round, with its data in place).
    pub fn validate(&self) -> Result<()> {
        let o = &self.online;
        ensure!(!o.prompts.as_os_str().is_empty(), "online.prompts: give a prompt file");
        ensure!(o.prompts.exists(), "online.prompts: {} does not exist", o.prompts.display());
        o.judge.parse::<JudgeSpec>().map_err(|e| anyhow::anyhow!("online.judge: {e}"))?;
        ensure!(o.rounds >= 1, "online.rounds must be ≥ 1");
        ensure!(o.samples_per_prompt >= 2, "online.samples_per_prompt must be ≥ 2 (a preference needs two answers)");
        ensure!(o.steps_per_round >= 1, "online.steps_per_round must be ≥ 1");
        ensure!(o.max_new_tokens >= 1 && o.batch >= 1, "online.max_new_tokens and online.batch must be ≥ 1");
        Ok(())
    }
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Round index (0-based).
    pub round: usize,
    /// Hash of the configuration that made the round (every setting but `online.rounds`): a rerun
    /// reuses the round only under the same settings.
    pub key: String,
    /// The policy the round sampled from and trained (a model spec or folder).
    pub policy: String,
    /// Mean judge reward of the round's samples: the policy's reward before the round's training.
    pub reward: f64,
    /// Prompts whose answers were not all tied (the groups trained on).
    pub groups: usize,
    /// Tokens generated this round.
    pub sampled_tokens: usize,
    /// Prompt + response tokens scored by the round's training.
    pub trained_tokens: usize,
    /// Training metrics of the round's first and last steps.
    pub first: BTreeMap<String, f64>,
    /// See `first`.
    pub last: BTreeMap<String, f64>,
    /// Wall time of the round.
    pub seconds: f64,
}

/// The whole run: every round and the final policy's reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterateReport {
    /// The rounds, in order.
    pub rounds: Vec<RoundSummary>,
    /// Mean judge reward of answers sampled from the final policy (same prompts, seed `seed + rounds`).
    pub final_reward: f64,
    /// The final policy's folder.
    pub final_policy: PathBuf,
    /// Sampled + trained tokens over all rounds (the final evaluation's samples excluded).
    pub compute_tokens: usize,
}

/// One round's samples: ids and text of every answer with its reward.
struct Samples {
    prompt_ids: Vec<Vec<u32>>,
    answers: Vec<Vec<Vec<u32>>>,
    texts: Vec<Vec<String>>,
    rewards: Vec<Vec<f64>>,
}

impl Samples {
    fn mean_reward(&self) -> f64 {
        let all: Vec<f64> = self.rewards.iter().flatten().copied().collect();
        all.iter().sum::<f64>() / all.len().max(1) as f64
    }

    fn tokens(&self) -> usize {
        self.answers.iter().flatten().map(Vec::len).sum()
    }

    /// One group per prompt whose answers are not all tied: the best answer first (the first of
    /// equal best), then the others (`best_vs_rest`, in sampling order) or the worst alone.
    fn groups(&self, pairing: Pairing) -> Vec<TokenGroup> {
        let mut out = Vec::new();
        for (p, rewards) in self.rewards.iter().enumerate() {
            let order = |cmp: fn(f64, f64) -> bool| {
                (0..rewards.len()).fold(0, |best, i| if cmp(rewards[i], rewards[best]) { i } else { best })
            };
            let (best, worst) = (order(|a, b| a > b), order(|a, b| a < b));
            if rewards[best] <= rewards[worst] {
                continue; // all tied: no preference
            }
            let cand = |i: usize| TokenCandidate { ids: self.answers[p][i].clone(), score: Some(rewards[i] as f32) };
            let strong = match pairing {
                Pairing::BestVsRest => (0..rewards.len()).filter(|&i| i != best).map(cand).collect(),
                Pairing::BestVsWorst => vec![cand(worst)],
            };
            out.push(TokenGroup { prompt_ids: self.prompt_ids[p].clone(), positive: cand(best), strong });
        }
        out
    }

    /// `samples.jsonl`: the prompt, every answer and its reward, per line.
    fn write(&self, path: &Path, prompts: &[EvalPrompt]) -> Result<()> {
        let mut body = String::new();
        for (i, p) in prompts.iter().enumerate() {
            let row =
                serde_json::json!({ "prompt": p.to_json(), "answers": self.texts[i], "rewards": self.rewards[i] });
            body.push_str(&row.to_string());
            body.push('\n');
        }
        write_atomic(path, body.as_bytes())
    }
}

/// Runs every round not yet finished in `cfg.online.out`, then samples the final policy.
pub fn run(cfg: &IterateConfig) -> Result<IterateReport> {
    let o = &cfg.online;
    let prompts = read_prompts(&o.prompts)?;
    let device = cfg.train.model.device.device()?;
    let spec: JudgeSpec = o.judge.parse().map_err(|e| anyhow::anyhow!("online.judge: {e}"))?;
    let loaded = LoadedJudge::load(&spec, &device, cfg.train.model.dtype, "online.judge")?;
    let judge = loaded.judge(o.batch);
    judge.check(&prompts)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create {}", o.out.display()))?;

    let initial = cfg.train.model.path.clone();
    let initial_reference = cfg.train.reference.path.clone().unwrap_or_else(|| initial.clone());
    let key = settings_key(cfg)?;
    let mut rounds = Vec::new();
    let mut policy = initial.clone();
    for r in 0..o.rounds {
        let dir = o.out.join(format!("round-{r:03}"));
        let done = dir.join("round.json");
        let summary = match read_round(&done)? {
            Some(s) if s.key == key && s.policy == policy => {
                eprintln!("round {r}: reusing {}", dir.display());
                s
            }
            Some(_) => bail!(
                "{} was made with other settings: a rerun continues a run only with the same settings (only \
                 online.rounds may change); choose another online.out or delete it",
                dir.display()
            ),
            None => {
                let reference = match o.reference {
                    ReferenceChoice::Initial => initial_reference.clone(),
                    ReferenceChoice::Previous => policy.clone(),
                };
                let s = round(cfg, r, &key, &policy, &reference, &prompts, &judge, &dir)?;
                write_atomic(&done, serde_json::to_string_pretty(&s)?.as_bytes())?;
                s
            }
        };
        eprintln!(
            "round {r}: reward {:.4} of the policy it started from; {} groups; loss {:.4} → {:.4}",
            summary.reward,
            summary.groups,
            summary.first.get("loss").copied().unwrap_or(f64::NAN),
            summary.last.get("loss").copied().unwrap_or(f64::NAN)
        );
        rounds.push(summary);
        policy = dir.join("final").display().to_string();
    }
    let last = sample_round(cfg, o.rounds, &policy, &prompts, &judge)?;
    let compute_tokens = rounds.iter().map(|s| s.sampled_tokens + s.trained_tokens).sum();
    let report = IterateReport {
        final_reward: last.mean_reward(),
        final_policy: PathBuf::from(&policy),
        rounds,
        compute_tokens,
    };
    write_atomic(&o.out.join("iterate.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// Hash of every setting but `online.rounds` (which a continued run raises).
fn settings_key(cfg: &IterateConfig) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut c = cfg.clone();
    c.online.rounds = 0;
    let text = toml::to_string(&c).context("serialising the configuration")?;
    Ok(Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn read_round(path: &Path) -> Result<Option<RoundSummary>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(serde_json::from_str(&text).ok())
}

/// Samples K answers per prompt from `policy` with round `r`'s seed and judges them.
fn sample_round(cfg: &IterateConfig, r: usize, policy: &str, prompts: &[EvalPrompt], judge: &Judge) -> Result<Samples> {
    let o = &cfg.online;
    let device = cfg.train.model.device.device()?;
    let mut lm = load_model(policy, &device).with_context(|| format!("the policy of round {r} ({policy})"))?;
    lm.model.precision = cfg.train.model.dtype;
    let prompt_ids = encode_prompts(&lm, prompts, o.chat_template)?;
    let longest = prompt_ids.iter().map(Vec::len).max().unwrap_or(0) + o.max_new_tokens;
    lm.check_length(longest, "the longest prompt + online.max_new_tokens")?;
    let stop: Vec<u32> = lm.codec()?.eos_token_id().into_iter().collect();
    let sc = SampleConfig {
        max_new_tokens: o.max_new_tokens,
        temperature: o.temperature,
        top_p: o.top_p,
        seed: o.seed.wrapping_add(r as u64),
        stop_ids: stop.clone(),
    };
    sc.validate()?;
    let model = lm.model.valid();
    let generated =
        sample::sample_answers(&model, &lm.rope, lm.pad_id(), &prompt_ids, o.samples_per_prompt, &sc, o.batch, |_| {});
    let answers: Vec<Vec<Vec<u32>>> = generated.into_iter().map(|g| g.into_iter().map(|s| s.ids).collect()).collect();
    let codec = lm.codec()?;
    let texts = answers
        .iter()
        .map(|a| a.iter().map(|s| sample::answer_text(codec, s, &stop)).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let rewards = prompts.iter().zip(&texts).map(|(p, t)| judge.score(p, t)).collect::<Result<Vec<_>>>()?;
    Ok(Samples { prompt_ids, answers, texts, rewards })
}

/// One round: sample, judge, group, train, export.
#[allow(clippy::too_many_arguments)] // the round's inputs, each used once
fn round(
    cfg: &IterateConfig,
    r: usize,
    key: &str,
    policy: &str,
    reference: &str,
    prompts: &[EvalPrompt],
    judge: &Judge,
    dir: &Path,
) -> Result<RoundSummary> {
    let t0 = Instant::now();
    let o = &cfg.online;
    let samples = sample_round(cfg, r, policy, prompts, judge)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_path = dir.join("samples.jsonl");
    samples.write(&data_path, prompts)?;
    let groups = samples.groups(o.pairing);
    if groups.is_empty() {
        bail!("round {r}: every prompt's {} answers got the same reward: nothing to learn from", o.samples_per_prompt);
    }
    let store = GroupStore::from_tokens(groups);

    let mut tc = cfg.train.clone();
    tc.model.path = policy.to_string();
    tc.reference.path = Some(reference.to_string());
    tc.data.paths = vec![data_path];
    tc.data.seed = cfg.train.data.seed.wrapping_add(r as u64);
    tc.optim.max_steps = o.steps_per_round;
    tc.optim.seed = cfg.train.optim.seed.wrapping_add(r as u64);
    tc.output.dir = dir.to_path_buf();
    tc.output.overwrite = true; // an unfinished round starts again
    tc.output.export = true;
    tc.output.final_checkpoint = false;
    if tc.reference.cache_dir.is_none() {
        tc.reference.cache_dir = Some(o.out.join(".ref-cache"));
    }
    let lm = load_model(policy, &training_device(&tc)?)?;
    let trainer = Trainer::new(tc, lm, &store)?;
    let summary = crate::train::run(trainer, None)?;
    Ok(RoundSummary {
        round: r,
        key: key.to_string(),
        policy: policy.to_string(),
        reward: samples.mean_reward(),
        groups: store.len(),
        sampled_tokens: samples.tokens(),
        trained_tokens: summary.tokens,
        first: summary.first,
        last: summary.last,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
