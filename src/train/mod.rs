//! `epa train`: preference optimisation of a causal LM, end to end.
//!
//! The whole path of a training step, top to bottom, is [`train`]'s inner loop:
//! batch of groups → [`step::batch_loss`] (score every candidate, arrange the `[P × C]` matrix,
//! loss from `crate::losses`) → backward → accumulate → clip the global norm → AdamW.

pub mod checkpoint;
pub mod config;
mod config_diff;
pub mod docs;
mod faults;
pub mod optim;
pub mod reference;
pub mod run_dir;
pub mod step;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::{Batcher, GroupStore};
use crate::losses::Metrics;
use crate::model::load::{LoadedModel, load_model};
use crate::model::save::save_weights;
use crate::model::{CausalLm, Rope};

pub use config::TrainConfig;
use crate::model::lora::{apply_lora, lora_off, merged, save_peft_adapter, trainable_params};
use config::{AdapterMethod, OnNonFinite, ReferenceMode};
use reference::RefCache;

/// What a run did.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    /// The step a resumed run started from.
    pub resumed_from: Option<usize>,
    pub first: BTreeMap<String, f64>,
    pub last: BTreeMap<String, f64>,
    pub eval: Option<BTreeMap<String, f64>>,
    pub output: PathBuf,
    pub reference_pairs_computed: usize,
    pub reference_seconds: f64,
}

/// The reference log-probs of a run.
enum Reference {
    Frozen(LoadedModel),
    Cached(RefCache),
    /// The policy itself with adapters off; computed by the caller from the current model.
    LoraOff,
}

impl Reference {
    /// Reference sums of `pairs`, scored exactly as the policy scores them (same layout, same device:
    /// the training device, autodiff included, with gradients off), so identical weights give
    /// identical numbers and the first step's rewards are exactly 0. `policy` (with its rope and pad
    /// id) is read only by `LoraOff`.
    #[allow(clippy::too_many_arguments)] // issue 12's `Scorer` will carry rope, pad id and layout choice
    fn sums(&self, policy: &CausalLm, rope: &Rope, pad: u32, store: &GroupStore, pairs: &[(usize, usize)], prefix_sharing: bool, device: &Device) -> Result<Vec<f32>> {
        match self {
            Reference::Frozen(m) => Ok(step::reference_sums(&m.model, &m.rope, store, pairs, prefix_sharing, m.pad_id(), device)),
            Reference::Cached(c) => c.get(pairs),
            Reference::LoraOff => Ok(step::reference_sums(&lora_off(policy).no_grad(), rope, store, pairs, prefix_sharing, pad, device)),
        }
    }
}

/// The (group, candidate) pairs of each of the next `n` batches from `state`, in scoring order.
fn planned_batches(
    store: &GroupStore,
    batch: &crate::data::BatchConfig,
    weak: &crate::data::WeakConfig,
    seed: u64,
    state: crate::data::BatcherState,
    n: usize,
) -> Result<Vec<Vec<(usize, usize)>>> {
    let mut b = Batcher::with(store, batch, weak, seed)?;
    b.restore(state)?;
    Ok((0..n).map(|_| step::arrange(&b.next_batch(), store).pairs).collect())
}

/// The reference model on `device` (the training device), gradients off.
fn load_reference(cfg: &TrainConfig, spec: &str, device: &Device) -> Result<LoadedModel> {
    let mut m = load_model(spec, device)?;
    m.model = m.model.no_grad();
    m.model.precision = cfg.model.dtype;
    Ok(m)
}

fn build_reference(
    cfg: &TrainConfig,
    store: &GroupStore,
    batches: &[Vec<(usize, usize)>],
    cache_name: &str,
    device: &Device,
) -> Result<(Reference, f64)> {
    let spec = cfg.reference.path.clone().unwrap_or_else(|| cfg.model.path.clone());
    let t0 = Instant::now();
    match cfg.reference.mode {
        ReferenceMode::Frozen => Ok((Reference::Frozen(load_reference(cfg, &spec, device)?), 0.0)),
        ReferenceMode::LoraOff => Ok((Reference::LoraOff, 0.0)),
        ReferenceMode::Cached => {
            // The compute dtype changes the numbers: a bf16 reference is cached apart from a float32 one.
            let precision = match cfg.model.dtype {
                crate::device::Precision::Float32 => "",
                crate::device::Precision::Bfloat16 => "-bf16",
            };
            let key = format!(
                "{}-{}{precision}",
                &reference::model_fingerprint(&spec)?[..16],
                &reference::store_fingerprint(store)[..16]
            );
            let dir = cfg.reference.cache_dir.clone().unwrap_or_else(|| {
                cfg.output.dir.parent().unwrap_or(Path::new(".")).join(".ref-cache").join(cache_name)
            });
            let mut cache = RefCache::open(&dir, &key)?;
            if !batches.iter().all(|b| cache.has_all(b)) {
                let m = load_reference(cfg, &spec, device)?;
                cache.fill(batches, &m, store, cfg.model.prefix_sharing, device)?;
            }
            Ok((Reference::Cached(cache), t0.elapsed().as_secs_f64()))
        }
    }
}

/// A progress bar on stderr (hidden when disabled or when stderr is not a terminal), `label` before it.
pub(crate) fn progress_bar(total: u64, enabled: bool, label: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    let label = if label.is_empty() { String::new() } else { format!("{label} ") };
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!("{label}{{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"))
            .expect("valid template"),
    );
    pb
}

/// Evaluates on held-out groups (no gradients): loss and metrics with the `eval/` prefix.
/// The policy and reference run as in training (on the training device, gradients off), so the eval
/// rewards of an untrained policy are exactly 0 as well.
fn evaluate(cfg: &TrainConfig, lm: &LoadedModel, pad: u32, eval: &mut Option<(GroupStore, Reference)>, device: &Device) -> Result<Option<BTreeMap<String, f64>>> {
    let Some((store, reference)) = eval.as_mut() else { return Ok(None) };
    let model = lm.model.clone().no_grad();
    let sharing = cfg.model.prefix_sharing;
    let mut batcher = Batcher::with(store, &eval_batch_config(cfg), &cfg.data.weak, cfg.data.seed)?;
    let mut metrics = Metrics::default();
    for _ in 0..batcher.batches_per_epoch() {
        let batch = batcher.next_batch();
        let mut refs = |pairs: &[(usize, usize)]| reference.sums(&lm.model, &lm.rope, pad, store, pairs, sharing, device);
        let (out, _) = step::batch_loss(&model, &lm.rope, store, &batch, &mut refs, &cfg.loss, sharing, pad, device)?;
        metrics.merge(&out.metrics);
    }
    Ok(Some(metrics.mean().into_iter().map(|(k, v)| (format!("eval/{k}"), v)).collect()))
}

fn eval_batch_config(cfg: &TrainConfig) -> crate::data::BatchConfig {
    crate::data::BatchConfig { shuffle: false, drop_last: false, ..cfg.data.batch.clone() }
}

/// Refuses data with sequences longer than the model's positions.
fn check_lengths(lm: &LoadedModel, store: &GroupStore, weak: bool, what: &str) -> Result<()> {
    match store.longest_sequence(weak) {
        (n, Some(at)) => lm.check_length(n, &format!("the longest prompt + response of the {what} ({at})")),
        (n, None) => lm
            .check_length(n, &format!("with weak negatives, the longest prompt + another prompt's response in the {what}"))
            .context("set data.max_length to bound it"),
    }
}

/// Called at every evaluation (each `eval.every_steps` and at the end) with the step and the current
/// model (`lm.model`, still an autodiff model: call `.valid()` for inference); the metrics it returns
/// are logged with that step's row.
pub type StepHook<'a> = dyn FnMut(usize, &LoadedModel) -> Result<BTreeMap<String, f64>> + 'a;

/// How a run starts (beside its config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from this checkpoint (or the newest one in this output folder).
    pub resume: Option<PathBuf>,
    /// Resume even though the config differs from the checkpoint's (the differences are printed).
    pub allow_config_change: bool,
}

/// Runs training as configured; `resume` is a checkpoint (or an output folder holding some).
pub fn train(cfg: &TrainConfig, resume: Option<&Path>) -> Result<TrainSummary> {
    train_with(cfg, &RunOptions { resume: resume.map(Path::to_path_buf), ..Default::default() }, None)
}

/// [`train`], with a hook that evaluates the model while it trains (the controlled experiment uses it
/// to sample from the policy at several points of the run).
pub fn train_with(cfg: &TrainConfig, opts: &RunOptions, mut hook: Option<&mut StepHook>) -> Result<TrainSummary> {
    let plain = cfg.model.device.device()?;
    cfg.model.dtype.check(cfg.model.device, &plain)?;
    let device = if cfg.model.gradient_checkpointing {
        plain.clone().autodiff().gradient_checkpointing()
    } else {
        plain.clone().autodiff()
    };
    device.seed(cfg.optim.seed);
    let start = match (&opts.resume, cfg.output.overwrite) {
        (Some(_), _) => run_dir::Start::Resume,
        (None, true) => run_dir::Start::Overwrite,
        (None, false) => run_dir::Start::Fresh,
    };
    // Held (locked) until the run returns.
    let _run_dir = run_dir::RunDir::open(&cfg.output.dir, start)?;
    let config_toml = toml::to_string_pretty(cfg)?;
    let resume_ckpt = opts.resume.as_deref().map(checkpoint::resolve).transpose()?;
    if let Some(ckpt) = &resume_ckpt {
        config_diff::check_resume(ckpt, &config_toml, opts.allow_config_change)?;
    }
    crate::model::save::write_atomic(&cfg.output.dir.join("config.toml"), config_toml.as_bytes())?;

    // Model and data.
    let mut lm = load_model(&cfg.model.path, &device)?;
    lm.model.precision = cfg.model.dtype;
    let pad = lm.pad_id();
    let codec = lm.codec.take().with_context(|| format!("{}: no tokenizer beside the model", lm.source.display()))?;
    let (store, report) = GroupStore::build(&cfg.data, &codec)?;
    eprintln!("{}", report.summary());
    if store.is_empty() {
        bail!("the training data (data.paths) has no groups left, every row was dropped (see the data report above)");
    }
    check_lengths(&lm, &store, cfg.data.weak.k > 0, "training data")?;
    if cfg.model.train_last_layers > 0 {
        let n = lm.model.layers.len();
        let keep = cfg.model.train_last_layers.min(n);
        let layers = std::mem::take(&mut lm.model.layers);
        lm.model.layers = layers.into_iter().enumerate().map(|(i, l)| if i < n - keep { l.no_grad() } else { l }).collect();
        lm.model.embed_tokens = lm.model.embed_tokens.clone().no_grad();
    }
    let mut batcher = Batcher::new(&store, &cfg.data)?;
    let accum = cfg.optim.grad_accum;
    let total = if cfg.optim.max_steps > 0 {
        cfg.optim.max_steps
    } else {
        (batcher.batches_per_epoch() * cfg.optim.epochs).div_ceil(accum)
    };

    // Optimiser, and the state to resume from.
    let mut optim = optim::adamw(&cfg.optim);
    if cfg.adapter.method == AdapterMethod::Lora {
        lm.model = apply_lora(lm.model, &cfg.adapter.lora, cfg.optim.seed)?;
        eprintln!("LoRA: {} trainable parameters", trainable_params(&lm.model));
    }
    let mut model = lm.model.clone();
    let mut state = checkpoint::TrainerState { step: 0, batcher: batcher.state(), skipped: 0 };
    let mut resumed_from = None;
    if let Some(ckpt) = resume_ckpt {
        let (m, o, s) = checkpoint::load(&ckpt, model, optim)?;
        (model, optim, state) = (m, o, s);
        batcher.restore(state.batcher)?;
        resumed_from = Some(state.step);
        eprintln!("resumed from {} at step {}", ckpt.display(), state.step);
    }
    let ids = optim::param_ids(&model);

    // Reference log-probs for every pair the remaining steps will see.
    let remaining = total.saturating_sub(state.step) * accum;
    let (reference, ref_seconds, ref_computed) = if cfg.loss.needs_reference() {
        let batches = planned_batches(&store, &cfg.data.batch, &cfg.data.weak, cfg.data.seed, batcher.state(), remaining)?;
        let (r, s) = build_reference(cfg, &store, &batches, "train", &device)?;
        let computed = if let Reference::Cached(c) = &r { c.computed } else { 0 };
        (Some(r), s, computed)
    } else {
        (None, 0.0, 0)
    };
    let mut eval = if cfg.eval.paths.is_empty() {
        None
    } else {
        let ecfg = crate::data::DataConfig { paths: cfg.eval.paths.clone(), max_rows: cfg.eval.max_groups, ..cfg.data.clone() };
        let (es, er) = GroupStore::build(&ecfg, &codec).context("in the eval set (eval.paths)")?;
        if es.is_empty() {
            bail!("the eval set (eval.paths) has no groups left, every row was dropped:\n{}", er.summary());
        }
        check_lengths(&lm, &es, cfg.data.weak.k > 0, "eval data")?;
        let eb = Batcher::with(&es, &eval_batch_config(cfg), &cfg.data.weak, cfg.data.seed)?;
        let batches = planned_batches(&es, &eval_batch_config(cfg), &cfg.data.weak, cfg.data.seed, eb.state(), eb.batches_per_epoch())?;
        let (r, _) = build_reference(cfg, &es, &batches, "eval", &device)?;
        Some((es, r))
    };

    // Metrics log: keep what an earlier run wrote up to the resumed step.
    let mut log = run_dir::MetricsLog::open(&cfg.output.dir, resumed_from)?;
    // A finished run resumed again: its final evaluation row is already there.
    let final_eval_logged = log.kept.iter().any(|r| {
        r["step"].as_u64() == Some(total as u64) && r.as_object().is_some_and(|o| o.keys().all(|k| k == "step" || k.starts_with("eval/")))
    });
    let (start_step, start_skipped) = (state.step, state.skipped);

    let pb = progress_bar(total as u64, cfg.output.progress, "");
    pb.set_position(state.step as u64);
    let (mut first, mut last) = (BTreeMap::new(), BTreeMap::new());
    let mut last_eval = None;
    while state.step < total {
        let t0 = Instant::now();
        let mut acc = GradientsAccumulator::new();
        let mut metrics = Metrics::default();
        let mut tokens = 0;
        let mut finite = true;
        for _ in 0..accum {
            let batch = batcher.next_batch();
            let mut refs = |pairs: &[(usize, usize)]| match reference.as_ref() {
                Some(r) => r.sums(&model, &lm.rope, pad, &store, pairs, cfg.model.prefix_sharing, &device),
                None => Ok(vec![0.0; pairs.len()]),
            };
            let (out, n) = step::batch_loss(&model, &lm.rope, &store, &batch, &mut refs, &cfg.loss, cfg.model.prefix_sharing, pad, &device)?;
            let loss = out.loss.div_scalar(accum as f64);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                finite = false;
                break;
            }
            acc.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            metrics.merge(&out.metrics);
            tokens += n;
        }
        if !finite {
            match cfg.optim.on_non_finite {
                OnNonFinite::Stop => bail!(
                    "non-finite loss at optimiser step {} (epoch {}, batch {}); lower optim.lr or set optim.on_non_finite = \"skip\"",
                    state.step + 1,
                    batcher.state().epoch,
                    batcher.state().next_batch
                ),
                OnNonFinite::Skip => {
                    eprintln!("non-finite loss at optimiser step {}: skipped (optim.on_non_finite = \"skip\")", state.step + 1);
                    state.skipped += 1;
                    state.step += 1;
                    state.batcher = batcher.state();
                    continue;
                }
            }
        }
        let mut grads = acc.grads();
        let grad_norm = optim::clip_global_norm(&mut grads, &ids, cfg.optim.max_grad_norm);
        let lr = optim::learning_rate(&cfg.optim, state.step, total);
        model = optim.step(lr, model, grads);
        state.step += 1;
        state.batcher = batcher.state();

        let mut m = metrics.mean();
        m.insert("learning_rate".into(), lr);
        m.insert("grad_norm".into(), grad_norm);
        m.insert("tokens_per_s".into(), tokens as f64 / t0.elapsed().as_secs_f64());
        // Fractional progress, as transformers logs it: batches consumed / batches per epoch.
        let epoch = state.batcher.epoch as f64 + state.batcher.next_batch as f64 / batcher.batches_per_epoch().max(1) as f64;
        m.insert("epoch".into(), epoch);
        if cfg.eval.every_steps > 0 && state.step % cfg.eval.every_steps == 0 && state.step < total {
            lm.model = model.clone();
            if let Some(e) = evaluate(cfg, &lm, pad, &mut eval, &device)? {
                m.extend(e);
            }
            if let Some(h) = hook.as_mut() {
                m.extend(pb.suspend(|| h(state.step, &lm))?);
            }
        }
        log.write(state.step, &m)?;
        pb.set_position(state.step as u64);
        pb.set_message(format!(
            "loss {:.4} acc {:.2} {:.0} tok/s",
            m.get("loss").copied().unwrap_or(f64::NAN),
            m.get("rewards/accuracies").copied().unwrap_or(f64::NAN),
            m["tokens_per_s"]
        ));
        if first.is_empty() {
            first = m.clone();
        }
        last = m;
        if cfg.output.save_every_steps > 0 && state.step % cfg.output.save_every_steps == 0 && state.step < total {
            log.sync()?;
            checkpoint::save(&cfg.output.dir, &model, &optim, &state, &config_toml, cfg.output.keep_last)?;
        }
    }
    pb.finish_and_clear();
    let (ran, skipped) = (state.step - start_step, state.skipped - start_skipped);
    if ran > 0 && skipped == ran {
        bail!(
            "every one of the {ran} optimiser steps of this run was skipped for a non-finite loss \
             (optim.on_non_finite = \"skip\"): nothing was learned, no checkpoint or model was written; lower optim.lr"
        );
    }
    if skipped > 0 {
        eprintln!("{skipped} of {ran} optimiser steps were skipped for a non-finite loss");
    }
    if cfg.output.final_checkpoint {
        log.sync()?;
        checkpoint::save(&cfg.output.dir, &model, &optim, &state, &config_toml, cfg.output.keep_last)?;
    }
    lm.model = model;
    if eval.is_some() || hook.is_some() {
        let mut e = evaluate(cfg, &lm, pad, &mut eval, &device)?.unwrap_or_default();
        if let Some(h) = hook.as_mut() {
            e.extend(h(state.step, &lm)?);
        }
        if !(final_eval_logged && state.step == total) {
            log.write(state.step, &e)?;
        }
        last_eval = Some(e);
    }
    if cfg.output.export {
        let dir = cfg.output.dir.join("final");
        if cfg.adapter.method == AdapterMethod::Lora {
            save_peft_adapter(&lm.model, &cfg.adapter.lora, &cfg.model.path, &cfg.output.dir.join("adapter"))?;
            save_weights(&merged(&lm.model).valid(), &lm.config, &dir)?;
        } else {
            save_weights(&lm.model.valid(), &lm.config, &dir)?;
        }
        codec.save_to_folder(&dir)?;
    }
    Ok(TrainSummary {
        steps: state.step,
        resumed_from,
        first,
        last,
        eval: last_eval,
        output: cfg.output.dir.clone(),
        reference_pairs_computed: ref_computed,
        reference_seconds: ref_seconds,
    })
}
