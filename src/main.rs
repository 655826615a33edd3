// TEMPORARY wiring on branch `lab` to try `epa lab bandit`; the lead owns main.rs.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "epa")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Theory labs.
    Lab {
        #[command(subcommand)]
        lab: Lab,
    },
}

#[derive(Subcommand)]
enum Lab {
    /// Tabular bandit: Bradley-Terry's many minimisers vs the energy-based model's one.
    Bandit(epa::lab::BanditArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lab { lab: Lab::Bandit(args) } => {
            let t = std::time::Instant::now();
            let r = epa::lab::run_bandit(&args)?;
            print!("{}", epa::lab::report::markdown(&r));
            eprintln!("wrote {} in {:.1}s", args.out.display(), t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
