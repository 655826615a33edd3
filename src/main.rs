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
    /// Score (prompt, response) pairs: summed and per-token log-probs of the response.
    Score(epa::cli::score::ScoreArgs),
    /// Greedy or sampled generation from a model.
    Generate(epa::cli::generate::GenerateArgs),
    /// Preference data tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Throughput of forward and training steps (SmolLM2-135M shape).
    Bench(epa::bench::BenchArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Counts, length histograms, dropped rows and why, rendered examples.
    Inspect(epa::data::inspect::InspectArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Score(a) => epa::cli::score::run(&a),
        Command::Generate(a) => epa::cli::generate::run(&a),
        Command::Data(DataCommand::Inspect(a)) => epa::data::inspect::inspect(&a),
        Command::Bench(a) => epa::bench::run(&a).map(|_| ()),
    }
}
