//! The `epa` command line: every clap type of the binary, one file per command, and [`main`], which
//! parses and dispatches. Each command's arguments convert into the plain options struct of the
//! library entry point it calls (`BenchArgs` → [`crate::bench::BenchOptions`], …), so the library
//! does not depend on clap's derive structs.
//!
//! The exception: small configuration enums that the command line parses directly keep their
//! `clap::ValueEnum` derive where they are defined, beside their serde names (which are the same
//! spellings): [`crate::data::ChatTemplateUse`], [`crate::data::ShapeKind`],
//! [`crate::bench::BenchShape`], [`crate::bench::BenchLayout`], [`crate::demo::config::Preset`],
//! [`crate::lab::methods::MethodKind`], [`crate::lab::world::RefPolicy`]. `--device` and `--dtype`
//! parse through `FromStr` ([`crate::device`]).

pub mod bench;
pub mod config;
pub mod data;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod iterate;
pub mod lab;
pub mod score;
pub mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::device::{DeviceOptions, DeviceSpec, Precision};

/// The `epa` command line.
#[derive(Parser)]
#[command(name = "epa", version, about = "Energy Preference Alignment and the DPO family for causal LMs")]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `epa`.
#[derive(Subcommand)]
pub enum Command {
    /// Train a policy with EPA, DPO or any loss of the family (see `epa config --print-default`).
    Train(train::TrainArgs),
    /// Configuration helpers.
    Config(config::ConfigArgs),
    /// Score (prompt, response) pairs: summed and per-token log-probs of the response.
    Score(score::ScoreArgs),
    /// Judge a policy against its reference: sampled answers scored by a reward model (or the gold
    /// reward), win rate, length-controlled win rate, KL, length, with bootstrap intervals.
    Eval(eval::EvalArgs),
    /// Online EPA / DPO: rounds of sampling from the policy, judging the answers with a reward model
    /// (or the gold reward), and training on the best answer against the others.
    Iterate(iterate::IterateArgs),
    /// Greedy or sampled generation from a model.
    Generate(generate::GenerateArgs),
    /// Preference data tools.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Theory labs (no neural network): where EPA's claims can be checked exactly.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// The controlled experiment: EPA vs DPO on SmolLM2 with a known gold reward, end to end
    /// (data → training → evaluation → report with plots).
    Demo(demo::DemoArgs),
    /// Throughput of forward and training steps (SmolLM2-135M shape).
    Bench(bench::BenchArgs),
}

/// The `epa` binary: process setup, parse, dispatch.
pub fn main() -> Result<()> {
    // Keep freed pages in the allocator: a training step frees and re-allocates hundreds of MiB, and
    // returning them to the OS makes the kernel zero them again on every step (measured in
    // bench/RESULTS.md: 4–19 % faster steps for 3–5 % more peak memory). MIMALLOC_PURGE_DELAY, when
    // set, still decides.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        crate::bench::keep_freed_memory();
    }
    match Cli::parse().command {
        Command::Train(a) => train::run(a),
        Command::Config(a) => config::run(&a),
        Command::Score(a) => score::run(&a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(&a),
        Command::Iterate(a) => iterate::run(a),
        Command::Data(c) => data::run(c),
        Command::Lab(c) => lab::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

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
    pub fn device(&self) -> Result<burn::tensor::Device> {
        DeviceOptions::from(*self).device()
    }
}

impl From<DeviceArgs> for DeviceOptions {
    fn from(a: DeviceArgs) -> Self {
        DeviceOptions { device: a.device, dtype: a.dtype }
    }
}
