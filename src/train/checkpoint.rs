//! Checkpoints: `<output>/checkpoint-NNNNNN/` with the model record, the optimiser state and the
//! trainer state (step, data position). Written into a temporary folder and renamed into place,
//! so a crash mid-write leaves the previous checkpoint intact; the newest `keep_last` are kept.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::data::BatcherState;
use crate::model::CausalLm;
use crate::model::save::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    pub batcher: BatcherState,
    /// Batches skipped for a non-finite loss so far.
    pub skipped: usize,
}

fn name(step: usize) -> String {
    format!("checkpoint-{step:06}")
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

pub fn save(dir: &Path, model: &CausalLm, optim: &ModuleOptimizer, state: &TrainerState, config_toml: &str, keep_last: usize) -> Result<PathBuf> {
    let final_dir = dir.join(name(state.step));
    let tmp = dir.join(format!(".{}.tmp-{}", name(state.step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", tmp.join("model.bpk").display()))?;
    optim
        .save(tmp.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e:?}", tmp.join("optim.bpk").display()))?;
    write_atomic(&tmp.join("config.toml"), config_toml.as_bytes())?;
    // state.json last: a folder without it is not a checkpoint.
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir).with_context(|| format!("cannot move {} into place", tmp.display()))?;
    let all = list(dir);
    if all.len() > keep_last {
        for (_, old) in &all[..all.len() - keep_last] {
            std::fs::remove_dir_all(old).ok();
        }
    }
    Ok(final_dir)
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

pub fn load(ckpt: &Path, model: CausalLm, optim: ModuleOptimizer) -> Result<(CausalLm, ModuleOptimizer, TrainerState)> {
    let state: TrainerState = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("state.json")).with_context(|| format!("cannot read {}", ckpt.join("state.json").display()))?,
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
