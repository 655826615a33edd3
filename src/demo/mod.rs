//! `epa demo`: the controlled experiment. EPA vs DPO on a real pretrained LM (SmolLM2-135M-Instruct by
//! default), with preference data labelled by a known gold reward, judged by that reward against the
//! KL from the reference on the policies' own samples.
//!
//! The pipeline, one stage per file, top to bottom:
//! 1. [`topics`]: prompts "Write one sentence about {topic}.", split into training and held-out;
//! 2. [`datagen`]: K answers per prompt from the reference, gold-scored ([`crate::gold`]), ranked by
//!    Plackett-Luce on R/τ → `data/train.jsonl`, `data/held_out.jsonl`;
//! 3. training: every method × seed through [`crate::train::train_with`], same reference, data and
//!    budget; the hook evaluates the policy at evenly spaced points of the run; [`online`] methods
//!    sample their own data in rounds instead, at the same compute;
//! 4. [`evaluate`]: gold reward, KL, win rate and slope-1 metrics per held-out prompt;
//! 5. [`report`]: bootstrap intervals, the verdict, `results.json`, `report.md`, `frontier.png`,
//!    `curves.png`.
//!
//! Stages whose inputs have not changed are reused from the output folder (keyed by a hash of the
//! configuration that produced them), so an interrupted demo continues where it stopped.

pub mod config;
pub mod datagen;
pub mod evaluate;
pub mod online;
pub mod report;
pub mod topics;

use anyhow::{Context, Result};
use burn::module::Module;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use config::{DemoConfig, Preset};
use datagen::Row;
use evaluate::{Judge, PointEval};
use report::{Results, RunEval};

use crate::data::{ChatTemplateUse, ShapeKind, Ties};
use crate::device::DeviceOptions;
use crate::gold::GoldReward;
use crate::losses::{LossConfig, LossTerm};
use crate::model::generate::SampleConfig;
use crate::model::load::{LoadedModel, load_model};
use crate::train::config::{AdapterMethod, ReferenceMode};
use crate::train::{TrainConfig, train_with};

/// What `epa demo` runs ([`run`]'s options; the command line's `DemoArgs` converts into it).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The configuration to start from.
    pub preset: Preset,
    /// Output folder (data, runs, report).
    pub out: PathBuf,
    /// `key=value` overrides of the configuration (TOML values, dotted keys).
    pub set: Vec<String>,
    /// Print the configuration (TOML) and exit.
    pub print_config: bool,
    /// Redo every stage even when the output folder holds results for the same settings.
    pub fresh: bool,
    /// Device and compute dtype of data generation, training and evaluation.
    pub device: DeviceOptions,
}

/// A short hash of settings (a JSON value), naming the stage output they produce.
fn key_of(settings: serde_json::Value) -> String {
    Sha256::digest(settings.to_string().as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A stage's saved output, reused when its key matches.
fn cached<T: serde::de::DeserializeOwned>(path: &Path, key: &str, fresh: bool) -> Option<T> {
    if fresh {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    (v["key"].as_str()? == key).then(|| serde_json::from_value(v["value"].clone()).ok()).flatten()
}

fn save_cached<T: serde::Serialize>(path: &Path, key: &str, value: &T) -> Result<()> {
    let v = serde_json::json!({ "key": key, "value": value });
    crate::model::save::write_atomic(path, serde_json::to_string_pretty(&v)?.as_bytes())
}

/// The data stage's output: training rows, held-out rows, statistics.
type DataStage = (Vec<Row>, Vec<Row>, BTreeMap<String, f64>);

/// Data stage: generated once per (model, data settings, gold settings).
fn data_stage(
    cfg: &DemoConfig,
    key: &str,
    lm: &LoadedModel,
    gold: &GoldReward,
    out: &Path,
    fresh: bool,
) -> Result<DataStage> {
    let dir = out.join("data");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = dir.join("meta.json");
    let (train_path, held_path) = (dir.join("train.jsonl"), dir.join("held_out.jsonl"));
    if let Some(stats) = cached::<BTreeMap<String, f64>>(&meta, key, fresh)
        && let (Ok(t), Ok(h)) = (datagen::read_rows(&train_path), datagen::read_rows(&held_path))
    {
        eprintln!("data: reusing {} ({} + {} prompts)", dir.display(), t.len(), h.len());
        return Ok((t, h, stats));
    }
    let d = &cfg.data;
    let (train_topics, held_topics) = topics::split(d.train_prompts, d.held_out_prompts, d.seed)?;
    let t0 = Instant::now();
    let pb = crate::train::progress_bar(
        ((d.train_prompts + d.held_out_prompts) * d.samples_per_prompt) as u64,
        true,
        "sampling answers",
    );
    let train = datagen::make_rows(lm, gold, &train_topics, d, d.seed, |n| pb.inc(n as u64))?;
    let held = datagen::make_rows(lm, gold, &held_topics, d, d.seed.wrapping_add(1), |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    datagen::write_rows(&train_path, &train)?;
    datagen::write_rows(&held_path, &held)?;
    let all: Vec<&Row> = train.iter().chain(&held).collect();
    let golds: Vec<f64> = all.iter().flat_map(|r| r.gold.iter().copied()).collect();
    let agree = all
        .iter()
        .filter(|r| {
            let best = r.gold.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (r.score_chosen * d.label_temperature - best).abs() < 1e-9
        })
        .count();
    let stats = BTreeMap::from([
        ("prompts_train".to_string(), train.len() as f64),
        ("prompts_held_out".to_string(), held.len() as f64),
        ("answers_per_prompt".to_string(), d.samples_per_prompt as f64),
        ("gold_mean_of_reference_answers".to_string(), golds.iter().sum::<f64>() / golds.len() as f64),
        ("chosen_is_gold_best_fraction".to_string(), agree as f64 / all.len() as f64),
        ("seconds".to_string(), t0.elapsed().as_secs_f64()),
    ]);
    save_cached(&meta, key, &stats)?;
    eprintln!(
        "data: {} + {} prompts × {} answers in {:.0}s",
        train.len(),
        held.len(),
        d.samples_per_prompt,
        stats["seconds"]
    );
    Ok((train, held, stats))
}

/// The `epa train` configuration of one run: the defaults with the demo's settings, then the demo
/// configuration's own `--set` overrides (`train.set`, then the method's `set`).
fn train_config(
    cfg: &DemoConfig,
    m: &config::Method,
    seed: u64,
    out: &Path,
    dev: DeviceOptions,
) -> Result<TrainConfig> {
    let t = &cfg.train;
    let mut tc = TrainConfig::default();
    tc.model.path = cfg.model.clone();
    tc.model.train_last_layers = if t.lora_rank > 0 { 0 } else { t.train_last_layers };
    let d = &mut tc.data;
    d.paths = vec![out.join("data/train.jsonl")];
    d.shape = ShapeKind::Standard;
    d.grouping.ties = Ties::Keep;
    // The prompts are plain strings that were sampled through the chat template.
    d.chat_template = ChatTemplateUse::Always;
    d.grouping.max_strong = Some(m.strong);
    d.weak.k = m.weak;
    d.batch.prompts_per_batch = t.prompts_per_batch;
    d.seed = seed;
    // The method names its loss as `epa train` does, with the method's β (default: the shared one).
    let term = serde_json::json!({ "name": m.loss, "beta": m.beta(t) });
    let term: LossTerm =
        serde_json::from_value(term).with_context(|| format!("method {}: loss {:?}", m.name, m.loss))?;
    tc.loss = LossConfig { terms: vec![term], metrics_beta: Some(m.beta(t)) };
    tc.optim.lr = t.lr;
    tc.optim.warmup_steps = t.warmup_steps;
    tc.optim.max_steps = t.steps;
    tc.optim.seed = seed;
    tc.reference.mode = ReferenceMode::Cached;
    tc.reference.cache_dir = Some(out.join("ref-cache"));
    tc.eval.every_steps = (t.steps / cfg.eval.points).max(1);
    tc.output.dir = out.join("runs").join(format!("{}-s{seed}", m.name));
    tc.output.export = false;
    tc.output.final_checkpoint = false;
    if t.lora_rank > 0 {
        tc.adapter.method = AdapterMethod::Lora;
        tc.adapter.lora.rank = t.lora_rank;
        tc.adapter.lora.alpha = (2 * t.lora_rank) as f64;
    }
    let sets: Vec<String> = t.set.iter().chain(&m.set).cloned().collect();
    let mut tc = tc.with_overrides(&sets).with_context(|| format!("method {}", m.name))?;
    tc.model.device = dev.device;
    tc.model.dtype = dev.dtype;
    Ok(tc)
}

/// Reads `(step + offset, loss, rewards/accuracies)` from a run's metrics log.
fn curve(dir: &Path, offset: usize) -> Vec<(usize, f64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["step"].as_u64()? as usize + offset,
                v["loss"].as_f64()?,
                v["rewards/accuracies"].as_f64().unwrap_or(f64::NAN),
            ))
        })
        .collect()
}

/// Runs the experiment end to end and writes the report into `args.out`.
pub fn run(args: &DemoOptions) -> Result<Option<Results>> {
    let cfg = DemoConfig::preset(args.preset).with_overrides(&args.set)?;
    cfg.validate()?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(None);
    }
    let out = &args.out;
    let t_all = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::model::save::write_atomic(&out.join("config.toml"), toml::to_string_pretty(&cfg)?.as_bytes())?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");

    let gold = GoldReward::load_default(cfg.gold.clone())?;
    eprintln!("loading {}", cfg.model);
    let mut lm = load_model(&cfg.model, &args.device.device()?)?;
    lm.model.precision = args.device.dtype;
    let data_key = key_of(serde_json::json!([cfg.model, cfg.data, cfg.gold]));
    let (train, held, data_stats) = data_stage(&cfg, &data_key, &lm, &gold, out, args.fresh)?;

    let d = &cfg.data;
    let sample = SampleConfig {
        max_new_tokens: d.max_new_tokens,
        temperature: d.temperature,
        top_p: d.top_p,
        seed: d.seed.wrapping_add(7_777),
        stop_ids: lm.codec()?.eos_token_id().into_iter().collect(),
    };
    let judge = Judge::new(
        &lm.model,
        &lm.rope,
        lm.pad_id(),
        lm.codec()?,
        &gold,
        &held,
        &train[..cfg.eval.fit_prompts.min(train.len())],
        sample,
        cfg.eval.samples_per_prompt,
        d.batch,
    )?;
    let reference = judge.reference_point();
    // The offline methods' sampling compute: the reference's answers to the training prompts.
    let data_tokens = datagen::sampled_tokens(&lm, &train)?;
    let topics = online::topics(&train);

    let mut runs: Vec<Vec<RunEval>> = Vec::new();
    for m in &cfg.methods {
        let mut per_seed = Vec::new();
        for &seed in &cfg.seeds {
            let mut tc = train_config(&cfg, m, seed, out, args.device)?;
            let beta = m.beta(&cfg.train);
            // Not the preset's name or the bootstrap count: they do not change a run.
            let e = &cfg.eval;
            let key = key_of(serde_json::json!([data_key, tc, e.samples_per_prompt, e.points, beta, e.fit_prompts]));
            // The stage cache decides whether this run is needed; a run it did not keep is replaced.
            tc.output.overwrite = true;
            let saved = tc.output.dir.join("eval.json");
            if let Some(r) = cached::<RunEval>(&saved, &key, args.fresh) {
                eprintln!("{} seed {seed}: reusing {}", m.name, saved.display());
                per_seed.push(r);
                continue;
            }
            eprintln!(
                "{} seed {seed}: training {} steps ({} strong + {} weak negatives)",
                m.name, cfg.train.steps, m.strong, m.weak
            );
            let t0 = Instant::now();
            let mut points: Vec<PointEval> = Vec::new();
            let mut hook = |step: usize, policy: &crate::model::CausalLm| -> Result<BTreeMap<String, f64>> {
                let te = Instant::now();
                let p = judge.evaluate(&policy.valid(), step, beta)?;
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let row =
                    BTreeMap::from([("demo/gold".to_string(), mean(&p.gold)), ("demo/kl".to_string(), mean(&p.kl))]);
                eprintln!(
                    "  step {step}: gold {:.3}, KL {:.3}, win rate {:.2} (evaluated in {:.0}s)",
                    row["demo/gold"],
                    row["demo/kl"],
                    mean(&p.win),
                    te.elapsed().as_secs_f64()
                );
                points.push(p);
                Ok(row)
            };
            let (compute_tokens, curve) = match &m.online {
                None => {
                    let s = train_with(&tc, &crate::train::RunOptions::default(), Some(&mut hook))?;
                    (data_tokens + s.tokens, curve(&tc.output.dir, 0))
                }
                Some(o) => {
                    let c = online::train_online(&cfg, m, o, seed, &tc, &topics, &gold, args.device, &mut hook)?;
                    let per_round = cfg.train.steps / o.rounds;
                    let rounds =
                        (0..o.rounds).flat_map(|r| curve(&tc.output.dir.join(format!("round-{r}")), r * per_round));
                    (c, rounds.collect())
                }
            };
            let r = RunEval {
                method: m.name.clone(),
                seed,
                points,
                curve,
                train_seconds: t0.elapsed().as_secs_f64(),
                compute_tokens,
            };
            save_cached(&saved, &key, &r)?;
            per_seed.push(r);
        }
        runs.push(per_seed);
    }

    let results = report::summarise(&cfg, &command, data_stats, &reference, &runs, judge.truth());
    crate::model::save::write_atomic(&out.join("results.json"), serde_json::to_string_pretty(&results)?.as_bytes())?;
    crate::model::save::write_atomic(&out.join("report.md"), report::markdown(&results, &reference, &runs).as_bytes())?;
    report::plots(out, &results, &runs)?;
    report::scatter(&out.join("slope1.png"), &results, &runs, judge.truth())?;
    eprintln!("wrote {} in {:.0}s", out.join("report.md").display(), t_all.elapsed().as_secs_f64());
    Ok(Some(results))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration as the demo used to write it: `epa train --set` strings on an empty config.
    fn from_set_strings(
        cfg: &DemoConfig,
        m: &config::Method,
        seed: u64,
        out: &Path,
        dev: DeviceOptions,
    ) -> TrainConfig {
        let t = &cfg.train;
        let s = |p: &Path| format!("{:?}", p.display().to_string());
        let every = (t.steps / cfg.eval.points).max(1);
        let mut sets = vec![
            format!("model.path={:?}", cfg.model),
            format!("model.train_last_layers={}", if t.lora_rank > 0 { 0 } else { t.train_last_layers }),
            format!("data.paths=[{}]", s(&out.join("data/train.jsonl"))),
            "data.shape=\"standard\"".into(),
            "data.grouping.ties=\"keep\"".into(),
            "data.chat_template=\"always\"".into(),
            format!("data.grouping.max_strong={}", m.strong),
            format!("data.weak.k={}", m.weak),
            format!("data.batch.prompts_per_batch={}", t.prompts_per_batch),
            format!("data.seed={seed}"),
            format!("loss.terms=[{{name={:?}, beta={}}}]", m.loss, m.beta(t)),
            format!("loss.metrics_beta={}", m.beta(t)),
            format!("optim.lr={}", t.lr),
            format!("optim.warmup_steps={}", t.warmup_steps),
            format!("optim.max_steps={}", t.steps),
            format!("optim.seed={seed}"),
            "reference.mode=\"cached\"".into(),
            format!("reference.cache_dir={}", s(&out.join("ref-cache"))),
            format!("eval.every_steps={every}"),
            format!("output.dir={}", s(&out.join("runs").join(format!("{}-s{seed}", m.name)))),
            "output.export=false".into(),
            "output.final_checkpoint=false".into(),
        ];
        if t.lora_rank > 0 {
            sets.push("adapter.method=\"lora\"".into());
            sets.push(format!("adapter.lora.rank={}", t.lora_rank));
            sets.push(format!("adapter.lora.alpha={}", 2 * t.lora_rank));
        }
        sets.extend(t.set.iter().cloned());
        sets.extend(m.set.iter().cloned());
        let mut tc = TrainConfig::load(None, &sets).unwrap();
        tc.model.device = dev.device;
        tc.model.dtype = dev.dtype;
        tc
    }

    /// The typed construction gives exactly the configuration the `--set` strings gave: every
    /// preset and method, with and without LoRA, with weak negatives, and with the demo config's own
    /// overrides on top.
    #[test]
    fn train_config_equals_the_set_strings_it_replaced() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::create_dir_all(out.join("data")).unwrap();
        std::fs::write(out.join("data/train.jsonl"), "").unwrap();
        let mut cfgs: Vec<DemoConfig> =
            [Preset::Tiny, Preset::Demo, Preset::Full, Preset::Study].map(DemoConfig::preset).to_vec();
        let mut lora = DemoConfig::preset(Preset::Demo);
        lora.train.lora_rank = 8;
        lora.train.lr = 1e-4;
        cfgs.push(lora);
        let mut overridden = DemoConfig::preset(Preset::Tiny);
        overridden.train.set =
            vec!["optim.lr=3e-5".into(), "data.weak.k=1".into(), "model.prefix_sharing=false".into()];
        overridden.methods.push(config::Method {
            set: vec!["loss.terms=[{name=\"ipo\", beta=0.5}]".into(), "optim.warmup_steps=1".into()],
            ..config::Method::new("ipo", "ipo", 1, 0)
        });
        let sigmoid = config::Method { beta: Some(0.3), ..config::Method::new("c", "sigmoid", 1, 3) };
        overridden.methods.push(sigmoid);
        cfgs.push(overridden);
        let dev = DeviceOptions { device: crate::device::DeviceSpec::Cpu, dtype: crate::device::Precision::Bfloat16 };
        let mut compared = 0;
        for cfg in &cfgs {
            for m in &cfg.methods {
                for &seed in &cfg.seeds {
                    let typed = train_config(cfg, m, seed, out, dev).unwrap();
                    let strings = from_set_strings(cfg, m, seed, out, dev);
                    let toml = |c: &TrainConfig| toml::to_string(c).unwrap();
                    assert_eq!(toml(&typed), toml(&strings), "{} {}", cfg.preset, m.name);
                    assert_eq!(typed, strings, "{} {}", cfg.preset, m.name);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 4 * 2 + 3 + 3 * 3 + 10 * 5 + 3 + 6 * 2);
        // A bad override still names the method.
        let mut bad = DemoConfig::preset(Preset::Tiny);
        bad.methods[0].set = vec!["optim.nonsense=1".into()];
        let e = format!("{:#}", train_config(&bad, &bad.methods[0], 1, out, dev).unwrap_err());
        assert!(e.contains("method dpo") && e.contains("nonsense"), "{e}");
    }
}
