//! [`Trainer`]: a run's state (policy, optimiser, data position, reference, metrics log) and the
//! operations a training loop calls — [`Trainer::step`], [`Trainer::evaluate`], [`Trainer::save`],
//! [`Trainer::export`]. [`super::train`] is the loop that drives them from a config.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::data::{BatchConfig, Batcher, DataConfig, GroupStore};
use crate::distributed::{Collective, Shard, Single, sync};
use crate::losses::Metrics;
use crate::model::load::LoadedModel;
use crate::model::lora::{apply_lora, merged, save_peft_adapter, trainable_params};
use crate::model::save::save_weights;
use crate::model::{CausalLm, ModelConfig, Rope};
use crate::scores::Scorer;
use crate::text::TextCodec;

use super::checkpoint::{self, TrainerState};
use super::config::{AdapterMethod, OnNonFinite, TrainConfig};
use super::reference::{Reference, planned_batches};
use super::{RunOptions, StepHook, TrainSummary, config_diff, optim, run_dir, step};

/// The device a run trains on: `model.device` with autodiff (and gradient checkpointing when
/// `model.gradient_checkpointing`), seeded with `optim.seed`. Load the policy onto it before
/// [`Trainer::new`].
pub fn training_device(cfg: &TrainConfig) -> Result<Device> {
    let plain = cfg.model.device.device()?;
    cfg.model.dtype.check(cfg.model.device, &plain)?;
    let device =
        if cfg.model.gradient_checkpointing { plain.autodiff().gradient_checkpointing() } else { plain.autodiff() };
    device.seed(cfg.optim.seed);
    Ok(device)
}

/// A training run in progress.
///
/// ```no_run
/// use epa::train::{Trainer, TrainConfig, training_device};
/// # fn main() -> anyhow::Result<()> {
/// let sets = ["model.path=\"tests/fixtures/tiny-llama\"".into(), "data.paths=[\"prefs.jsonl\"]".into()];
/// let cfg = TrainConfig::load(None, &sets)?;
/// let lm = epa::model::load::load_model(&cfg.model.path, &training_device(&cfg)?)?;
/// let (data, _report) = epa::data::GroupStore::build(&cfg.data, lm.codec()?)?;
/// let mut trainer = Trainer::new(cfg, lm, &data)?;
/// while !trainer.is_done() {
///     if let Some(metrics) = trainer.step()? {
///         println!("step {}: loss {:.4}", trainer.steps_done(), metrics["loss"]);
///     }
/// }
/// trainer.save()?;
/// # Ok(())
/// # }
/// ```
pub struct Trainer<'d> {
    cfg: TrainConfig,
    config_toml: String,
    device: Device,
    /// The policy (on the training device); taken out only while the optimiser updates it.
    policy: Option<CausalLm>,
    rope: Rope,
    pad: u32,
    model_config: ModelConfig,
    codec: Option<TextCodec>,
    store: &'d GroupStore,
    batcher: Batcher<'d>,
    optim: ModuleOptimizer,
    /// Ids and ranks of the parameters (for the global-norm clip).
    ids: Vec<(burn::module::ParamId, usize)>,
    state: TrainerState,
    total: usize,
    reference: Option<Reference>,
    reference_seconds: f64,
    eval: Option<(&'d GroupStore, Reference)>,
    /// The ranks of a data-parallel run ([`Single`] otherwise) and this rank's part of each batch.
    comm: Arc<dyn Collective>,
    shard: Shard,
    /// The metrics file (rank 0 only).
    log: Option<run_dir::MetricsLog>,
    resumed_from: Option<usize>,
    start: TrainerState,
    first: BTreeMap<String, f64>,
    last: BTreeMap<String, f64>,
    /// Prompt + response tokens scored by this run's steps (policy passes; weak negatives included).
    tokens: usize,
    /// The locked output folder (rank 0 only).
    _run_dir: Option<run_dir::RunDir>,
}

impl<'d> Trainer<'d> {
    /// A fresh run of `cfg` on `model` (loaded on [`training_device`]) and the training groups
    /// `data`; the output folder is `cfg.output.dir` (refused if it holds an earlier run, unless
    /// `output.overwrite`).
    pub fn new(cfg: TrainConfig, model: LoadedModel, data: &'d GroupStore) -> Result<Self> {
        Self::with_options(cfg, model, data, None, &RunOptions::default())
    }

    /// [`Trainer::new`] with held-out groups for [`Trainer::evaluate`] and the run options (resume,
    /// data parallelism).
    ///
    /// Data parallel (`opts.collective` with more than one rank): `data.batch.prompts_per_batch` is
    /// per rank, as TRL's `per_device_train_batch_size`; every rank draws the same global batch of
    /// `prompts_per_batch × world` prompts (weak negatives included) and scores its contiguous
    /// share; only rank 0 writes files.
    pub fn with_options(
        cfg: TrainConfig,
        mut lm: LoadedModel,
        data: &'d GroupStore,
        eval: Option<&'d GroupStore>,
        opts: &RunOptions,
    ) -> Result<Self> {
        cfg.validate_settings()?;
        let comm: Arc<dyn Collective> = opts.collective.clone().unwrap_or_else(|| Arc::new(Single));
        let (shard, main) = (Shard::of(comm.as_ref()), comm.rank() == 0);
        let device = lm.model.device();
        let start = match (&opts.resume, cfg.output.overwrite) {
            (Some(_), _) => run_dir::Start::Resume,
            (None, true) => run_dir::Start::Overwrite,
            (None, false) => run_dir::Start::Fresh,
        };
        // Held (locked) until the trainer is dropped.
        let run_dir = if main { Some(run_dir::RunDir::open(&cfg.output.dir, start)?) } else { None };
        let config_toml = toml::to_string_pretty(&cfg)?;
        let resume = opts.resume.as_deref().map(checkpoint::resolve).transpose()?;
        if let Some(ckpt) = &resume {
            config_diff::check_resume(ckpt, &config_toml, opts.allow_config_change)?;
        }
        if main {
            crate::model::save::write_atomic(&cfg.output.dir.join("config.toml"), config_toml.as_bytes())?;
        }

        if data.is_empty() {
            bail!(
                "the training data (data.paths) has no groups left, every row was dropped (see the data report above)"
            );
        }
        check_lengths(&lm, data, cfg.data.weak.k > 0, "training data")?;
        if let Some(es) = eval {
            check_lengths(&lm, es, cfg.data.weak.k > 0, "eval data")?;
        }
        lm.model.precision = cfg.model.dtype;
        lm.model.fused_head = cfg.model.fused_head;
        if cfg.model.train_last_layers > 0 {
            let n = lm.model.layers.len();
            let keep = cfg.model.train_last_layers.min(n);
            let layers = std::mem::take(&mut lm.model.layers);
            lm.model.layers =
                layers.into_iter().enumerate().map(|(i, l)| if i < n - keep { l.no_grad() } else { l }).collect();
            lm.model.embed_tokens = lm.model.embed_tokens.clone().no_grad();
        }
        let global = global_batch(&cfg.data.batch, shard.world);
        let mut batcher = Batcher::new(data, &DataConfig { batch: global.clone(), ..cfg.data.clone() })?;
        let accum = cfg.optim.grad_accum;
        let total = if cfg.optim.max_steps > 0 {
            cfg.optim.max_steps
        } else {
            (batcher.batches_per_epoch() * cfg.optim.epochs).div_ceil(accum)
        };

        // Optimiser, and the state to resume from.
        let mut optim = optim::adamw(&cfg.optim);
        let pad = lm.pad_id();
        let mut model = lm.model;
        if cfg.adapter.method == AdapterMethod::Lora {
            model = apply_lora(model, &cfg.adapter.lora, cfg.optim.seed)?;
            if main {
                eprintln!("LoRA: {} trainable parameters", trainable_params(&model));
            }
        }
        let mut state = TrainerState {
            step: 0,
            batcher: batcher.state(),
            skipped: 0,
            world_size: shard.world,
            global_batch: global.prompts_per_batch,
        };
        let mut resumed_from = None;
        if let Some(ckpt) = resume {
            (model, optim, state) = checkpoint::load(&ckpt, model, optim)?;
            check_world(&ckpt, &state, shard.world, global.prompts_per_batch)?;
            (state.world_size, state.global_batch) = (shard.world, global.prompts_per_batch);
            batcher.restore(state.batcher)?;
            resumed_from = Some(state.step);
            if main {
                eprintln!("resumed from {} at step {}", ckpt.display(), state.step);
            }
        }
        sync::check_same_weights(comm.as_ref(), &model)?;
        let ids = optim::param_ids(&model);

        // Reference log-probs for every pair the remaining steps (and the evaluations) will see.
        let scorer = Scorer::new(&model, &lm.rope, pad, &device).prefix_sharing(cfg.model.prefix_sharing);
        let (reference, reference_seconds) = if cfg.loss.needs_reference() {
            let remaining = total.saturating_sub(state.step) * accum;
            let batches =
                planned_batches(data, &global, &cfg.data.weak, cfg.data.seed, batcher.state(), remaining, shard)?;
            let (r, s) = Reference::build(&cfg, &scorer, data, &batches, "train", comm.as_ref())?;
            (Some(r), s)
        } else {
            (None, 0.0)
        };
        let eval = match eval {
            Some(es) if es.is_empty() => bail!("the eval set (eval.paths) has no groups left, every row was dropped"),
            Some(es) => {
                let ecfg = eval_batch_config(&cfg, shard.world);
                let eb = Batcher::with(es, &ecfg, &cfg.data.weak, cfg.data.seed)?;
                let (state, n) = (eb.state(), eb.batches_per_epoch());
                let batches = planned_batches(es, &ecfg, &cfg.data.weak, cfg.data.seed, state, n, shard)?;
                Some((es, Reference::build(&cfg, &scorer, es, &batches, "eval", comm.as_ref())?.0))
            }
            None => None,
        };
        // Metrics log: keep what an earlier run wrote up to the resumed step.
        let log = if main { Some(run_dir::MetricsLog::open(&cfg.output.dir, resumed_from)?) } else { None };
        Ok(Trainer {
            config_toml,
            device,
            rope: lm.rope,
            pad,
            model_config: lm.config,
            codec: lm.codec,
            store: data,
            batcher,
            optim,
            ids,
            start: state.clone(),
            state,
            total,
            reference,
            reference_seconds,
            eval,
            comm,
            shard,
            log,
            resumed_from,
            first: BTreeMap::new(),
            last: BTreeMap::new(),
            tokens: 0,
            policy: Some(model),
            cfg,
            _run_dir: run_dir,
        })
    }

    /// One optimiser step: `optim.grad_accum` micro-batches, each scored under the policy and the
    /// reference and turned into the configured loss, backward, accumulate; clip the global norm;
    /// AdamW. Returns the step's metrics (TRL's names), or `None` when a non-finite loss made it
    /// skip the step (`optim.on_non_finite = "skip"`; with `"stop"` that is an error).
    pub fn step(&mut self) -> Result<Option<BTreeMap<String, f64>>> {
        let t0 = Instant::now();
        let model = self.policy.take().expect("the policy is back after every step");
        let (mut grads, metrics, tokens) = match self.micro_batches(&model) {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.policy = Some(model);
                return self.non_finite();
            }
            Err(e) => {
                self.policy = Some(model);
                return Err(e);
            }
        };
        sync::all_reduce_grads(self.comm.as_ref(), &mut grads, &model);
        let metrics = sync::gather_metrics(self.comm.as_ref(), metrics)?;
        let tokens = sync::sum(self.comm.as_ref(), tokens);
        let grad_norm = optim::clip_global_norm(&mut grads, &self.ids, self.cfg.optim.max_grad_norm);
        let lr = optim::learning_rate(&self.cfg.optim, self.state.step, self.total);
        self.policy = Some(self.optim.step(lr, model, grads));
        self.tokens += tokens;
        self.state.step += 1;
        self.state.batcher = self.batcher.state();
        super::faults::kill_after_step(self.comm.rank(), self.state.step);

        let mut m = metrics.mean();
        m.insert("learning_rate".into(), lr);
        m.insert("grad_norm".into(), grad_norm);
        m.insert("tokens_per_s".into(), tokens as f64 / t0.elapsed().as_secs_f64());
        // Fractional progress, as transformers logs it: batches consumed / batches per epoch.
        let b = self.state.batcher;
        m.insert("epoch".into(), b.epoch as f64 + b.next_batch as f64 / self.batcher.batches_per_epoch().max(1) as f64);
        if self.first.is_empty() {
            self.first = m.clone();
        }
        self.last = m.clone();
        Ok(Some(m))
    }

    /// The step's micro-batches: this rank's accumulated gradients, merged metrics and tokens run;
    /// `None` at the first non-finite loss (on any rank: all ranks stop at the same micro-batch).
    ///
    /// Each micro-batch's loss is the configured prompt mean over this rank's share, weighted by the
    /// share's part of the global batch, so that the sum over ranks (the all-reduce) is the prompt
    /// mean over the whole global batch, not a mean of rank means.
    fn micro_batches(&mut self, model: &CausalLm) -> Result<Option<(GradientsParams, Metrics, usize)>> {
        let accum = self.cfg.optim.grad_accum;
        let scorer =
            Scorer::new(model, &self.rope, self.pad, &self.device).prefix_sharing(self.cfg.model.prefix_sharing);
        let mut acc = GradientsAccumulator::new();
        let mut metrics = Metrics::default();
        let mut tokens = 0;
        for _ in 0..accum {
            let global = self.batcher.next_batch();
            let global_prompts = global.groups.len();
            let batch = self.shard.take(global);
            if batch.groups.is_empty() {
                // A short last batch left this rank nothing: it contributes zero gradients.
                if sync::any(self.comm.as_ref(), false) {
                    return Ok(None);
                }
                continue;
            }
            let mut refs = |pairs: &[(usize, usize)]| match &self.reference {
                Some(r) => r.sums(&scorer, self.store, pairs),
                None => Ok(vec![0.0; pairs.len()]),
            };
            let (out, n) = step::batch_loss(&scorer, self.store, &batch, &mut refs, &self.cfg.loss)?;
            let mut loss = out.loss.div_scalar(accum as f64);
            if self.shard.world > 1 {
                loss = loss.mul_scalar(batch.groups.len() as f64 / global_prompts as f64);
            }
            let value: f32 = loss.clone().into_scalar();
            if sync::any(self.comm.as_ref(), !value.is_finite()) {
                return Ok(None);
            }
            acc.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
            metrics.merge(&out.metrics);
            tokens += n;
        }
        Ok(Some((acc.grads(), metrics, tokens)))
    }

    fn non_finite(&mut self) -> Result<Option<BTreeMap<String, f64>>> {
        match self.cfg.optim.on_non_finite {
            OnNonFinite::Stop => bail!(
                "non-finite loss at optimiser step {} (epoch {}, batch {}); lower optim.lr or set optim.on_non_finite = \"skip\"",
                self.state.step + 1,
                self.batcher.state().epoch,
                self.batcher.state().next_batch
            ),
            OnNonFinite::Skip => {
                eprintln!(
                    "non-finite loss at optimiser step {}: skipped (optim.on_non_finite = \"skip\")",
                    self.state.step + 1
                );
                self.state.skipped += 1;
                self.state.step += 1;
                // The skipped step's remaining micro-batches are not drawn: the next step starts
                // where this one stopped, as before.
                self.state.batcher = self.batcher.state();
                Ok(None)
            }
        }
    }

    /// Loss and metrics on the held-out groups (`eval/` prefix), gradients off; `None` without an
    /// eval set. The policy and reference run as in training (on the training device), so the eval
    /// rewards of an untrained policy are exactly 0 as well.
    pub fn evaluate(&mut self) -> Result<Option<BTreeMap<String, f64>>> {
        let Some((store, reference)) = &self.eval else { return Ok(None) };
        let frozen = self.model().clone().no_grad();
        let policy =
            Scorer::new(&frozen, &self.rope, self.pad, &self.device).prefix_sharing(self.cfg.model.prefix_sharing);
        let ecfg = eval_batch_config(&self.cfg, self.shard.world);
        let mut batcher = Batcher::with(store, &ecfg, &self.cfg.data.weak, self.cfg.data.seed)?;
        let mut metrics = Metrics::default();
        for _ in 0..batcher.batches_per_epoch() {
            let batch = self.shard.take(batcher.next_batch());
            if batch.groups.is_empty() {
                continue;
            }
            let mut refs = |pairs: &[(usize, usize)]| reference.sums(&policy, store, pairs);
            let (out, _) = step::batch_loss(&policy, store, &batch, &mut refs, &self.cfg.loss)?;
            metrics.merge(&out.metrics);
        }
        let metrics = sync::gather_metrics(self.comm.as_ref(), metrics)?;
        Ok(Some(metrics.mean().into_iter().map(|(k, v)| (format!("eval/{k}"), v)).collect()))
    }

    /// Writes a checkpoint (model, optimiser, data position) after syncing the metrics written so
    /// far; keeps the newest `output.keep_last`. Returns its folder. Data parallel: rank 0 writes
    /// it (every rank holds the same weights and state); the others only return its folder.
    pub fn save(&mut self) -> Result<PathBuf> {
        let Some(log) = &self.log else { return Ok(checkpoint::path(&self.cfg.output.dir, self.state.step)) };
        log.sync()?;
        checkpoint::save(
            &self.cfg.output.dir,
            self.model(),
            &self.optim,
            &self.state,
            &self.config_toml,
            self.cfg.output.keep_last,
        )
    }

    /// Writes the model as a Hugging Face folder in `<output>/final` (LoRA: merged there, and the
    /// adapter as a PEFT folder in `<output>/adapter`), with the tokenizer when there is one.
    /// Data parallel: rank 0 writes it; the others only return the folder.
    pub fn export(&self) -> Result<PathBuf> {
        let dir = self.cfg.output.dir.join("final");
        if !self.is_main() {
            return Ok(dir);
        }
        if self.cfg.adapter.method == AdapterMethod::Lora {
            let adapter = self.cfg.output.dir.join("adapter");
            save_peft_adapter(self.model(), &self.cfg.adapter.lora, &self.cfg.model.path, &adapter)?;
            save_weights(&merged(self.model()).valid(), &self.model_config, &dir)?;
        } else {
            save_weights(&self.model().valid(), &self.model_config, &dir)?;
        }
        if let Some(codec) = &self.codec {
            codec.save_to_folder(&dir)?;
        }
        Ok(dir)
    }

    /// Appends a row of metrics for the current step to `metrics.jsonl` (rank 0; the metrics are
    /// global already).
    pub fn log(&mut self, metrics: &BTreeMap<String, f64>) -> Result<()> {
        match &mut self.log {
            Some(log) => log.write(self.state.step, metrics),
            None => Ok(()),
        }
    }

    /// Whether this process writes the run's files: rank 0 of a data-parallel run, or the only one.
    pub fn is_main(&self) -> bool {
        self.comm.rank() == 0
    }

    /// The ranks this run trains on ([`Single`] when not data parallel).
    pub fn collective(&self) -> &dyn Collective {
        self.comm.as_ref()
    }

    /// Whether the current step is a multiple of `every` (0 = never) before the last step.
    pub fn at(&self, every: usize) -> bool {
        every > 0 && self.state.step.is_multiple_of(every) && self.state.step < self.total
    }

    /// The policy (on the training device: `.valid()` for inference).
    pub fn model(&self) -> &CausalLm {
        self.policy.as_ref().expect("the policy is back after every step")
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Optimiser steps done (skipped ones included).
    pub fn steps_done(&self) -> usize {
        self.state.step
    }

    /// Optimiser steps of the whole run (`optim.max_steps`, or the epochs' worth).
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// Whether every step of the run is done.
    pub fn is_done(&self) -> bool {
        self.state.step >= self.total
    }

    /// Ends the run: refuses one where every step was skipped; writes the final checkpoint
    /// (`output.final_checkpoint`), the final evaluation (with `hook`'s metrics) and the export
    /// (`output.export`).
    pub fn finish(mut self, mut hook: Option<&mut StepHook>) -> Result<TrainSummary> {
        let (ran, skipped) = (self.state.step - self.start.step, self.state.skipped - self.start.skipped);
        if ran > 0 && skipped == ran {
            bail!(
                "every one of the {ran} optimiser steps of this run was skipped for a non-finite loss \
                 (optim.on_non_finite = \"skip\"): nothing was learned, no checkpoint or model was written; lower optim.lr"
            );
        }
        if skipped > 0 && self.is_main() {
            eprintln!("{skipped} of {ran} optimiser steps were skipped for a non-finite loss");
        }
        if self.cfg.output.final_checkpoint {
            self.save()?;
        }
        let mut last_eval = None;
        if self.eval.is_some() || hook.is_some() {
            let mut e = self.evaluate()?.unwrap_or_default();
            if let (Some(h), true) = (hook.as_mut(), self.is_main()) {
                e.extend(h(self.state.step, self.model())?);
            }
            // A finished run resumed again: its final evaluation row is already there.
            let total = self.total as u64;
            let logged = self.log.iter().flat_map(|l| &l.kept).any(|r| {
                r["step"].as_u64() == Some(total)
                    && r.as_object().is_some_and(|o| o.keys().all(|k| k == "step" || k.starts_with("eval/")))
            });
            if !(logged && self.is_done()) {
                self.log(&e)?;
            }
            last_eval = Some(e);
        }
        if self.cfg.output.export {
            self.export()?;
        }
        Ok(TrainSummary {
            steps: self.state.step,
            resumed_from: self.resumed_from,
            first: self.first,
            last: self.last,
            eval: last_eval,
            output: self.cfg.output.dir.clone(),
            reference_pairs_computed: self.reference.as_ref().map_or(0, Reference::computed),
            reference_seconds: self.reference_seconds,
            tokens: self.tokens,
        })
    }
}

/// The eval set's global batches: in order, all of them.
fn eval_batch_config(cfg: &TrainConfig, world: usize) -> BatchConfig {
    BatchConfig { shuffle: false, drop_last: false, ..global_batch(&cfg.data.batch, world) }
}

/// The global batch of `world` ranks of `batch.prompts_per_batch` prompts each.
fn global_batch(batch: &BatchConfig, world: usize) -> BatchConfig {
    BatchConfig { prompts_per_batch: batch.prompts_per_batch * world, ..batch.clone() }
}

/// A checkpoint's data position counts global batches: resuming is exact when the global batch is
/// the same, whatever the world size; otherwise it is refused, saying how to resume.
fn check_world(ckpt: &std::path::Path, state: &TrainerState, world: usize, global: usize) -> Result<()> {
    let was = if state.global_batch > 0 { state.global_batch } else { global / world * state.world_size };
    if was != global {
        let per = was / state.world_size.max(1);
        bail!(
            "{}: written by a run with a global batch of {was} prompts ({} rank(s) × {per}); this run's is {global} \
             ({world} rank(s) × {}), so the checkpoint's data position would point into other batches. Resume with \
             the same global batch: `mpirun -np {}` with the same config, or data.batch.prompts_per_batch = {} on \
             {world} rank(s) (with --allow-config-change)",
            ckpt.display(),
            state.world_size,
            global / world,
            state.world_size,
            if was % world == 0 { (was / world).to_string() } else { format!("{was}/{world} (not a whole number)") },
        );
    }
    Ok(())
}

/// Refuses data with sequences longer than the model's positions.
fn check_lengths(lm: &LoadedModel, store: &GroupStore, weak: bool, what: &str) -> Result<()> {
    match store.longest_sequence(weak) {
        (n, Some(at)) => lm.check_length(n, &format!("the longest prompt + response of the {what} ({at})")),
        (n, None) => lm
            .check_length(
                n,
                &format!("with weak negatives, the longest prompt + another prompt's response in the {what}"),
            )
            .context("set data.max_length to bound it"),
    }
}
