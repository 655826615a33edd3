//! `epa config --print-default`.

use anyhow::Result;

/// Arguments of `epa config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Print the default training configuration (TOML, every option).
    #[arg(long)]
    pub print_default: bool,
}

/// Runs `epa config`: prints the default configuration with `--print-default`, else a hint.
pub fn run(args: &ConfigArgs) -> Result<()> {
    if args.print_default {
        print!("{}", crate::train::config::TrainConfig::default_toml());
    } else {
        println!("use `epa config --print-default`");
    }
    Ok(())
}
