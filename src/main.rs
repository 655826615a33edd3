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
    /// Train a policy with EPA, DPO or any loss of the family (see `epa config --print-default`).
    Train(TrainArgs),
    /// Configuration helpers.
    Config {
        /// Print the default training configuration (TOML, every option).
        #[arg(long)]
        print_default: bool,
    },
    /// Score (prompt, response) pairs: summed and per-token log-probs of the response.
    Score(epa::cli::score::ScoreArgs),
    /// Judge a policy against its reference: sampled answers scored by a reward model (or the gold
    /// reward), win rate, length-controlled win rate, KL, length, with bootstrap intervals.
    Eval(epa::cli::eval::EvalArgs),
    /// Greedy or sampled generation from a model.
    Generate(epa::cli::generate::GenerateArgs),
    /// Preference data tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Theory labs (no neural network): where EPA's claims can be checked exactly.
    #[command(subcommand)]
    Lab(LabCommand),
    /// The controlled experiment: EPA vs DPO on SmolLM2 with a known gold reward, end to end
    /// (data → training → evaluation → report with plots).
    Demo(epa::demo::DemoArgs),
    /// Throughput of forward and training steps (SmolLM2-135M shape).
    Bench(epa::bench::BenchArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// TOML configuration (every key optional; defaults from `epa config --print-default`).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Override a key: `--set optim.lr=1e-5 --set 'loss.terms=[{name="dpo"}]'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from a checkpoint folder (or the newest checkpoint in an output folder).
    #[arg(long)]
    resume: Option<std::path::PathBuf>,
    /// Delete an earlier run in the output folder and start afresh: shorthand for
    /// `--set output.overwrite=true`.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// With --resume: continue even though the config differs from the checkpoint's.
    #[arg(long, requires = "resume")]
    allow_config_change: bool,
    /// Where the model runs (`cpu`, `cuda`, `cuda:N`, `wgpu`): shorthand for `--set model.device=…`.
    #[arg(long)]
    device: Option<epa::device::DeviceSpec>,
    /// Compute dtype (`float32`, `bfloat16`): shorthand for `--set model.dtype=…`.
    #[arg(long)]
    dtype: Option<epa::device::Precision>,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Tabular bandit: Bradley-Terry's many minimisers vs the energy-based model's one.
    Bandit(epa::lab::BanditArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Counts, length histograms, dropped rows and why, rendered examples.
    Inspect(epa::data::inspect::InspectArgs),
}

fn main() -> Result<()> {
    // Keep freed pages in the allocator: a training step frees and re-allocates hundreds of MiB, and
    // returning them to the OS makes the kernel zero them again on every step (measured in
    // bench/RESULTS.md: 4–19 % faster steps for 3–5 % more peak memory). MIMALLOC_PURGE_DELAY, when
    // set, still decides.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        epa::bench::keep_freed_memory();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => {
            let mut cfg = epa::train::TrainConfig::load(a.config.as_deref(), &a.set)?;
            cfg.model.device = a.device.unwrap_or(cfg.model.device);
            cfg.model.dtype = a.dtype.unwrap_or(cfg.model.dtype);
            cfg.output.overwrite |= a.overwrite;
            let opts = epa::train::RunOptions { resume: a.resume, allow_config_change: a.allow_config_change };
            let s = epa::train::train_with(&cfg, &opts, None)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        Command::Config { print_default } => {
            if print_default {
                print!("{}", epa::train::config::TrainConfig::default_toml());
            } else {
                println!("use `epa config --print-default`");
            }
            Ok(())
        }
        Command::Score(a) => epa::cli::score::run(&a),
        Command::Generate(a) => epa::cli::generate::run(&a),
        Command::Eval(a) => {
            let r = epa::eval::run(&a)?;
            print!("{}", epa::eval::report::markdown(&r));
            Ok(())
        }
        Command::Data(DataCommand::Inspect(a)) => epa::data::inspect::inspect(&a),
        Command::Lab(LabCommand::Bandit(a)) => {
            let t = std::time::Instant::now();
            let r = epa::lab::run_bandit(&a)?;
            print!("{}", epa::lab::report::markdown(&r));
            eprintln!("wrote {} in {:.1}s", a.out.display(), t.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Demo(a) => {
            if let Some(r) = epa::demo::run(&a)? {
                for v in &r.verdict {
                    println!("{v}");
                }
                println!("report: {}", a.out.join("report.md").display());
            }
            Ok(())
        }
        Command::Bench(a) => epa::bench::run(&a).map(|_| ()),
    }
}
