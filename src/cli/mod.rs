//! Subcommands of the `epa` binary that are thin wrappers over the library.

pub mod eval;
pub mod generate;
pub mod score;

use crate::device::{DeviceSpec, Precision};

/// `--device` and `--dtype`, shared by every command that runs a model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArgs {
    /// Where the model runs: `cpu`, `cuda`, `cuda:N` or `wgpu` (GPU backends need a binary built
    /// with `--features cuda` / `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Compute dtype: `float32` or `bfloat16` (bf16 compute, float32 weights; meant for GPUs).
    #[arg(long, default_value = "float32")]
    pub dtype: Precision,
}

impl DeviceArgs {
    /// The burn device, checked to compute in `dtype`.
    pub fn device(&self) -> anyhow::Result<burn::tensor::Device> {
        let d = self.device.device()?;
        self.dtype.check(self.device, &d)?;
        Ok(d)
    }
}
