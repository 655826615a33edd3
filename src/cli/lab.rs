//! `epa lab bandit [--methods dpo,epa …]`: the arguments of [`crate::lab::run_bandit`].

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::lab::BanditOptions;
use crate::lab::methods::MethodKind;
use crate::lab::world::RefPolicy;

/// The `epa lab` subcommands.
#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Tabular bandit: Bradley-Terry's many minimisers vs the energy-based model's one.
    Bandit(BanditArgs),
}

/// Options of `epa lab bandit`. Defaults run in well under a minute on 2 cores (release build).
#[derive(clap::Args, Clone, Debug)]
pub struct BanditArgs {
    /// Seed of every random draw (world, data, weak negatives, inits). Same seed → same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of prompts N.
    #[arg(long, default_value_t = 50)]
    pub n_prompts: usize,
    /// Number of responses M (one response space shared by all prompts).
    #[arg(long, default_value_t = 100)]
    pub n_responses: usize,
    /// Reference policy.
    #[arg(long, value_enum, default_value_t = RefPolicy::Uniform)]
    pub ref_policy: RefPolicy,
    /// Spread of the random reference policy's logits.
    #[arg(long, default_value_t = 1.0)]
    pub ref_sd: f64,
    /// r*(x,y) ~ N(0, reward_sd²).
    #[arg(long, default_value_t = 1.0)]
    pub reward_sd: f64,
    /// Responses per prompt the annotators ever compare (drawn from π_ref); 0 = all M.
    #[arg(long, default_value_t = 8)]
    pub pool: usize,
    /// Annotated comparisons (rounds) per prompt.
    #[arg(long, default_value_t = 40)]
    pub rounds: usize,
    /// Candidates ranked per round (4 like UltraFeedback; 2 = pairs).
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Weak negatives of `epa_weak` (EPA weak-only).
    #[arg(long, default_value_t = 16)]
    pub weak: usize,
    /// Numbers of weak negatives swept for EPA strong+weak.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 4, 8, 16, 32])]
    pub weak_sweep: Vec<usize>,
    /// Methods to train (default all): dpo, ipo, plackett_luce, infonca, epa_strong, epa_weak, epa
    /// (EPA strong+weak, once per --weak-sweep value).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = MethodKind::ALL, hide_possible_values = true)]
    pub methods: Vec<MethodKind>,
    /// Random initialisations per method.
    #[arg(long, default_value_t = 4)]
    pub inits: usize,
    /// Initial logits = log π_ref + init_sd · N(0, 1).
    #[arg(long, default_value_t = 1.0)]
    pub init_sd: f64,
    /// β of every method (IPO's τ).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
    /// EPA's w.
    #[arg(long, default_value_t = 1.0)]
    pub w: f64,
    /// EPA's weight on weak negatives.
    #[arg(long, default_value_t = 1.0)]
    pub lambda_weak: f64,
    /// InfoNCA's label temperature α (labels: softmax of rank scores / α).
    #[arg(long, default_value_t = 1.0)]
    pub infonca_alpha: f64,
    /// Full-batch Adam steps per method.
    #[arg(long, default_value_t = 700)]
    pub steps: usize,
    /// Peak learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Output directory.
    #[arg(long, default_value = "lab-bandit")]
    pub out: PathBuf,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

impl From<BanditArgs> for BanditOptions {
    fn from(a: BanditArgs) -> Self {
        BanditOptions {
            seed: a.seed,
            n_prompts: a.n_prompts,
            n_responses: a.n_responses,
            ref_policy: a.ref_policy,
            ref_sd: a.ref_sd,
            reward_sd: a.reward_sd,
            pool: a.pool,
            rounds: a.rounds,
            k: a.k,
            weak: a.weak,
            weak_sweep: a.weak_sweep,
            methods: a.methods,
            inits: a.inits,
            init_sd: a.init_sd,
            beta: a.beta,
            w: a.w,
            lambda_weak: a.lambda_weak,
            infonca_alpha: a.infonca_alpha,
            steps: a.steps,
            lr: a.lr,
            out: a.out,
            no_plots: a.no_plots,
        }
    }
}

/// Runs an `epa lab` subcommand and prints its report.
pub fn run(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::Bandit(a) => {
            let opts: BanditOptions = a.into();
            let t = std::time::Instant::now();
            let r = crate::lab::run_bandit(&opts)?;
            print!("{}", crate::lab::report::markdown(&r));
            eprintln!("wrote {} in {:.1}s", opts.out.display(), t.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bandit: BanditArgs,
    }

    /// The command line's defaults are the library's.
    #[test]
    fn defaults_match_bandit_options_default() {
        let parsed: BanditOptions = Cli::parse_from(["lab"]).bandit.into();
        let default = BanditOptions::default();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::to_value(&default).unwrap());
        assert_eq!((parsed.out, parsed.no_plots), (default.out, default.no_plots));
    }
}
