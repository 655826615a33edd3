//! `epa demo [--preset tiny|demo|full|study] [--out DIR] [--set KEY=VALUE …]`: the arguments of
//! [`crate::demo::run`].

use anyhow::Result;
use std::path::PathBuf;

use crate::demo::{DemoOptions, Preset};

/// Arguments of `epa demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// `tiny` (the fixture model, seconds; what CI runs), `demo` (SmolLM2, ~10 min on 2 cores, one
    /// seed: a demonstration), `full` (3 seeds) or `study` (every topic, K = 8, two β, 5 seeds,
    /// sized by a power calculation: the verdict; hours).
    #[arg(long, value_enum, default_value = "demo", hide_possible_values = true)]
    pub preset: Preset,
    /// Output folder (data, runs, report).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Override a setting: `--set train.steps=32 --set 'seeds=[1,2]'` (see `--print-config`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the configuration (TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Redo every stage even when the output folder holds results for the same settings.
    #[arg(long)]
    pub fresh: bool,
    /// `--device` and `--dtype`.
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        DemoOptions {
            preset: a.preset,
            out: a.out,
            set: a.set,
            print_config: a.print_config,
            fresh: a.fresh,
            device: a.device.into(),
        }
    }
}

/// Runs `epa demo` and prints the verdict and where the report is.
pub fn run(args: DemoArgs) -> Result<()> {
    let opts: DemoOptions = args.into();
    if let Some(r) = crate::demo::run(&opts)? {
        for v in &r.verdict {
            println!("{v}");
        }
        println!("report: {}", opts.out.join("report.md").display());
    }
    Ok(())
}
