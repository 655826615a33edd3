//! Checkpoints: `<output>/checkpoint-NNNNNN/` with the model record, the optimiser state and the
//! trainer state (step, data position). Written into a temporary folder, synced and renamed into
//! place, so a crash at any moment leaves the previous checkpoint intact; the newest `keep_last`
//! are kept.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::data::BatcherState;
use crate::model::CausalLm;
use crate::model::save::write_atomic;

use super::faults;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// What a checkpoint records beside the model and optimiser: where the run is.
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Data position (epoch, next batch, seed).
    pub batcher: BatcherState,
    /// Batches skipped for a non-finite loss so far.
    pub skipped: usize,
    /// Ranks of the run that wrote it (data parallelism; 1 for runs written before it existed).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Prompts per global batch (all ranks together), which the data position counts in; 0 when
    /// not recorded (older checkpoints: single-rank runs).
    #[serde(default)]
    pub global_batch: usize,
}

fn one() -> usize {
    1
}

fn name(step: usize) -> String {
    format!("checkpoint-{step:06}")
}

/// The folder [`save`] writes for `step` under `dir`.
pub fn path(dir: &Path, step: usize) -> PathBuf {
    dir.join(name(step))
}

/// Checkpoint folders under `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let step = n.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join("state.json").exists().then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Writes `checkpoint-<step>` under `dir` and prunes to the newest `keep_last`.
///
/// Crash safety: every file is written and synced in a temporary folder, the folder is synced, and
/// only then renamed into place (and the parent synced). Re-saving an existing step moves the old
/// folder aside first and deletes it only after the new one is in place; a run that dies between
/// the two renames finds the old folder put back by [`super::run_dir::RunDir::open`]. No step ever
/// deletes the last good checkpoint before its replacement exists.
pub fn save(
    dir: &Path,
    model: &CausalLm,
    optim: &ModuleOptimizer,
    state: &TrainerState,
    config_toml: &str,
    keep_last: usize,
) -> Result<PathBuf> {
    let final_dir = path(dir, state.step);
    let pid = std::process::id();
    let tmp = dir.join(format!(".{}.tmp-{pid}", name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot delete {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    faults::point("checkpoint folder created");
    let model_path = tmp.join("model.bpk");
    model
        .clone()
        .save_file(&model_path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", model_path.display()))?;
    sync(&model_path)?;
    faults::point("model.bpk written");
    let optim_path = tmp.join("optim.bpk");
    optim.save(&optim_path).map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", optim_path.display()))?;
    sync(&optim_path)?;
    faults::point("optim.bpk written");
    write_atomic(&tmp.join("config.toml"), config_toml.as_bytes())?;
    faults::point("config.toml written");
    // state.json last: a folder without it is not a checkpoint.
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    sync(&tmp)?;
    faults::point("state.json written");
    let aside = dir.join(format!(".{}.old-{pid}", name(state.step)));
    let replacing = final_dir.exists();
    if replacing {
        std::fs::rename(&final_dir, &aside).with_context(|| format!("cannot move {} aside", final_dir.display()))?;
        faults::point("old checkpoint moved aside");
    }
    std::fs::rename(&tmp, &final_dir).with_context(|| format!("cannot move {} into place", tmp.display()))?;
    sync(dir)?;
    faults::point("checkpoint renamed into place");
    if replacing {
        std::fs::remove_dir_all(&aside).with_context(|| format!("cannot delete {}", aside.display()))?;
        faults::point("old checkpoint deleted");
    }
    let all = list(dir);
    if all.len() > keep_last {
        for (_, old) in &all[..all.len() - keep_last] {
            std::fs::remove_dir_all(old).with_context(|| format!("cannot delete {}", old.display()))?;
            faults::point("old checkpoint pruned");
        }
    }
    Ok(final_dir)
}

/// Makes a file's bytes, or a folder's entries (creations, renames), durable.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {} to disk", path.display()))
}

/// A checkpoint folder, or the newest checkpoint inside an output folder.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").exists() {
        return Ok(path.to_path_buf());
    }
    match list(path).pop() {
        Some((_, p)) => Ok(p),
        None => bail!("{}: not a checkpoint and holds no checkpoint-* folder", path.display()),
    }
}

/// Loads a checkpoint into `model` and `optim` (built as the run builds them); returns them with the trainer state.
pub fn load(ckpt: &Path, model: CausalLm, optim: ModuleOptimizer) -> Result<(CausalLm, ModuleOptimizer, TrainerState)> {
    let state: TrainerState = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("state.json"))
            .with_context(|| format!("cannot read {}", ckpt.join("state.json").display()))?,
    )
    .with_context(|| format!("{}: corrupt state.json", ckpt.display()))?;
    let model = model
        .try_load_file(ckpt.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot load model.bpk: {e:?}", ckpt.display()))?;
    let optim = optim
        .load(ckpt.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot load optim.bpk: {e:?}", ckpt.display()))?;
    Ok((model, optim, state))
}
