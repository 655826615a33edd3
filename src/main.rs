//! The `epa` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "epa", version, about = "Energy Preference Alignment and the DPO family for causal LMs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput of forward and training steps (SmolLM2-135M shape).
    Bench(epa::bench::BenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(a) => epa::bench::run(&a).map(|_| ()),
    }
}
