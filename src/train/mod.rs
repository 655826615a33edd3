//! `epa train`: preference optimisation of a causal LM, end to end.
//!
//! The path of a training step, file by file:
//! [`run`] (this file: the loop) → [`Trainer::step`] (`trainer.rs`: micro-batches, backward,
//! accumulate, clip, AdamW) → [`step::batch_loss`] (`step.rs`: arrange the `[P × C]` matrix, the
//! loss) → [`crate::scores::Scorer::pairs`] (`scores.rs`: lay out and score every candidate).

pub mod checkpoint;
pub mod config;
mod config_diff;
pub mod devices;
pub mod docs;
mod faults;
pub mod optim;
pub mod reference;
pub mod run_dir;
pub mod step;
pub mod trainer;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::{DataConfig, GroupStore};
use crate::model::CausalLm;
use crate::model::load::load_model;

pub use config::TrainConfig;
pub use devices::train_on_devices;
pub use trainer::{Trainer, training_device};

/// What a run did.
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    /// Optimiser steps done (skipped ones included).
    pub steps: usize,
    /// The step a resumed run started from.
    pub resumed_from: Option<usize>,
    /// Metrics of the first step of this run.
    pub first: BTreeMap<String, f64>,
    /// Metrics of the last step.
    pub last: BTreeMap<String, f64>,
    /// The final evaluation (with the hook's metrics), when there was one.
    pub eval: Option<BTreeMap<String, f64>>,
    /// The output folder.
    pub output: PathBuf,
    /// Reference pairs computed into the cache by this run.
    pub reference_pairs_computed: usize,
    /// Seconds spent filling the reference cache.
    pub reference_seconds: f64,
    /// Prompt + response tokens the policy scored in this run's optimiser steps.
    pub tokens: usize,
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
        indicatif::ProgressStyle::with_template(&format!(
            "{label}{{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))
        .expect("valid template"),
    );
    pb
}

/// Called at every evaluation (each `eval.every_steps` and at the end) with the step and the current
/// policy (still on the autodiff device: call `.valid()` for inference); the metrics it returns are
/// logged with that step's row.
pub type StepHook<'a> = dyn FnMut(usize, &CausalLm) -> Result<BTreeMap<String, f64>> + 'a;

/// How a run starts (beside its config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from this checkpoint (or the newest one in this output folder).
    pub resume: Option<PathBuf>,
    /// Resume even though the config differs from the checkpoint's (the differences are printed).
    pub allow_config_change: bool,
    /// The ranks of a data-parallel run ([`crate::distributed::from_env`]); `None`: one process.
    pub collective: Option<std::sync::Arc<dyn crate::distributed::Collective>>,
}

/// Runs training as configured; `resume` is a checkpoint (or an output folder holding some).
pub fn train(cfg: &TrainConfig, resume: Option<&Path>) -> Result<TrainSummary> {
    train_with(cfg, &RunOptions { resume: resume.map(Path::to_path_buf), ..Default::default() }, None)
}

/// [`train`], with a hook that evaluates the model while it trains (the controlled experiment uses it
/// to sample from the policy at several points of the run). The whole loop:
pub fn train_with(cfg: &TrainConfig, opts: &RunOptions, hook: Option<&mut StepHook>) -> Result<TrainSummary> {
    let lm = load_model(&cfg.model.path, &training_device(cfg)?)?;
    let main = opts.collective.as_ref().is_none_or(|c| c.rank() == 0);
    let (data, eval) = build_data(cfg, &lm, main)?;
    let trainer = Trainer::with_options(cfg.clone(), lm, &data, eval.as_ref(), opts)?;
    run(trainer, hook)
}

/// The training groups and the eval set's (when `eval.paths`), tokenised with `lm`'s tokenizer;
/// the data report goes to stderr when `report`.
pub(crate) fn build_data(
    cfg: &TrainConfig,
    lm: &crate::model::load::LoadedModel,
    report: bool,
) -> Result<(GroupStore, Option<GroupStore>)> {
    let codec = lm.codec()?;
    let (data, summary) = GroupStore::build(&cfg.data, codec)?;
    if report {
        eprintln!("{}", summary.summary());
    }
    let eval = if cfg.eval.paths.is_empty() {
        None
    } else {
        let ecfg = DataConfig { paths: cfg.eval.paths.clone(), max_rows: cfg.eval.max_groups, ..cfg.data.clone() };
        let (es, er) = GroupStore::build(&ecfg, codec).context("in the eval set (eval.paths)")?;
        if es.is_empty() {
            bail!("the eval set (eval.paths) has no groups left, every row was dropped:\n{}", er.summary());
        }
        Some(es)
    };
    Ok((data, eval))
}

/// Drives `trainer` to the end of its run: step, evaluate and call `hook` every `eval.every_steps`,
/// log, checkpoint every `output.save_every_steps`; then [`Trainer::finish`].
pub fn run(mut trainer: Trainer, mut hook: Option<&mut StepHook>) -> Result<TrainSummary> {
    let cfg = trainer.config().clone();
    let pb = progress_bar(trainer.total_steps() as u64, cfg.output.progress && trainer.is_main(), "");
    pb.set_position(trainer.steps_done() as u64);
    while !trainer.is_done() {
        let Some(mut m) = trainer.step()? else { continue }; // skipped: a non-finite loss
        if trainer.at(cfg.eval.every_steps) {
            m.extend(trainer.evaluate()?.unwrap_or_default());
            if let (Some(h), true) = (hook.as_mut(), trainer.is_main()) {
                m.extend(pb.suspend(|| h(trainer.steps_done(), trainer.model()))?);
            }
        }
        trainer.log(&m)?;
        pb.set_position(trainer.steps_done() as u64);
        pb.set_message(format!(
            "loss {:.4} acc {:.2} {:.0} tok/s",
            m.get("loss").copied().unwrap_or(f64::NAN),
            m.get("rewards/accuracies").copied().unwrap_or(f64::NAN),
            m["tokens_per_s"]
        ));
        if trainer.at(cfg.output.save_every_steps) {
            trainer.save()?;
        }
    }
    pb.finish_and_clear();
    trainer.finish(hook)
}
