//! `epa train [--config FILE] [--set KEY=VALUE …]`: arguments of [`crate::train::train_with`].

use anyhow::Result;
use std::path::PathBuf;

use crate::device::{DeviceSpec, Precision};
use crate::train::{RunOptions, TrainConfig, train_with};

/// Arguments of `epa train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// TOML configuration (every key optional; defaults from `epa config --print-default`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key: `--set optim.lr=1e-5 --set 'loss.terms=[{name="dpo"}]'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from a checkpoint folder (or the newest checkpoint in an output folder).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Delete an earlier run in the output folder and start afresh: shorthand for
    /// `--set output.overwrite=true`.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// With --resume: continue even though the config differs from the checkpoint's.
    #[arg(long, requires = "resume")]
    pub allow_config_change: bool,
    /// Where the model runs (`cpu`, `cuda`, `cuda:N`, `wgpu`): shorthand for `--set model.device=…`.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Compute dtype (`float32`, `bfloat16`): shorthand for `--set model.dtype=…`.
    #[arg(long)]
    pub dtype: Option<Precision>,
    /// Data parallel in this process, one rank per device: `--devices cuda:0,cuda:1` (the batch
    /// size is per device). For several processes or nodes use `mpirun` instead.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    pub devices: Vec<DeviceSpec>,
    /// With --devices on CUDA GPUs: sum the gradients GPU to GPU with NCCL (burn's collectives)
    /// instead of through host memory. Not yet verified on a GPU.
    #[arg(long, requires = "devices")]
    pub nccl: bool,
}

impl TrainArgs {
    /// The configuration (file, then `--set`, then the shorthands) and the run options.
    pub fn into_options(&self) -> Result<(TrainConfig, RunOptions)> {
        let mut cfg = TrainConfig::load(self.config.as_deref(), &self.set)?;
        cfg.model.device = self.device.unwrap_or(cfg.model.device);
        cfg.model.dtype = self.dtype.unwrap_or(cfg.model.dtype);
        cfg.output.overwrite |= self.overwrite;
        let resume = self.resume.clone();
        Ok((cfg, RunOptions { resume, allow_config_change: self.allow_config_change, collective: None }))
    }
}

/// Runs `epa train` and prints the run's summary as JSON (rank 0 of a data-parallel run).
///
/// Launched by `mpirun` (a binary built with `--features mpi`), every rank runs this; a rank that
/// meets an error prints it and ends the whole job, so the others are not left waiting.
pub fn run(args: TrainArgs) -> Result<()> {
    let (mut cfg, mut opts) = args.into_options()?;
    let comm = crate::distributed::from_env()?;
    opts.collective = Some(comm.clone());
    if !args.devices.is_empty() {
        let s = crate::train::train_on_devices(&cfg, &opts, &args.devices, args.nccl)?;
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    if comm.world_size() > 1 {
        let local = crate::distributed::local_rank().unwrap_or(0);
        cfg.model.device = crate::distributed::rank_device(cfg.model.device, local);
    }
    match train_with(&cfg, &opts, None) {
        Ok(s) => {
            if comm.rank() == 0 {
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
            Ok(())
        }
        Err(e) if comm.world_size() > 1 => {
            eprintln!("rank {} of {}: error: {e:?}", comm.rank(), comm.world_size());
            comm.abort(1)
        }
        Err(e) => Err(e),
    }
}
