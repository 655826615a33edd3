//! `epa iterate [--config FILE] [--set KEY=VALUE …]`: arguments of [`crate::online::run`].

use anyhow::Result;
use std::path::PathBuf;

use crate::device::{DeviceSpec, Precision};
use crate::online::{IterateConfig, run as iterate};

/// `epa iterate`'s arguments.
#[derive(clap::Args, Debug)]
pub struct IterateArgs {
    /// TOML configuration with `[online]` (prompts, judge, rounds…) and `[train]` (an `epa train`
    /// config: the initial policy, the loss, the optimiser).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key: `--set online.rounds=3 --set train.optim.lr=1e-5`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where the models run (`cpu`, `cuda`, `cuda:N`, `wgpu`): shorthand for `--set train.model.device=…`.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Compute dtype (`float32`, `bfloat16`): shorthand for `--set train.model.dtype=…`.
    #[arg(long)]
    pub dtype: Option<Precision>,
}

/// Runs the rounds and prints the report (JSON).
pub fn run(args: IterateArgs) -> Result<()> {
    let mut cfg = IterateConfig::load(args.config.as_deref(), &args.set)?;
    cfg.train.model.device = args.device.unwrap_or(cfg.train.model.device);
    cfg.train.model.dtype = args.dtype.unwrap_or(cfg.train.model.dtype);
    let report = iterate(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
