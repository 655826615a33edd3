//! `epa data inspect FILE…`: the arguments of [`crate::data::inspect::inspect`].

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

use crate::data::inspect::InspectOptions;
use crate::data::{ChatTemplateUse, ShapeKind};

/// The `epa data` subcommands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Counts, length histograms, dropped rows and why, rendered examples.
    Inspect(InspectArgs),
}

/// Arguments of `epa data inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// Data files (.jsonl, .json, .parquet).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A TOML data config (field names, grouping, truncation); FILES replace its `paths`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A Hugging Face model or tokenizer folder (tokenizer.json, tokenizer_config.json): lengths are then
    /// in tokens, truncation rules apply and examples are rendered with the chat template.
    #[arg(long, alias = "model")]
    pub tokenizer: Option<PathBuf>,
    /// Force a shape: standard, implicit, multi_response (default: detected).
    #[arg(long, value_enum, hide_possible_values = true)]
    pub shape: Option<ShapeKind>,
    /// Longest prompt + response in tokens, with --tokenizer (default: the config's `max_length`,
    /// else 1024).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Longest prompt in tokens, with --tokenizer; longer prompts are cut (default: the config's
    /// `max_prompt_length`, else no limit).
    #[arg(long)]
    pub max_prompt_length: Option<usize>,
    /// Which prompts the chat template renders: auto (TRL's rule: message lists do, strings are
    /// tokenised verbatim), always, never (default: the config's `chat_template`, else auto).
    #[arg(long, value_enum)]
    pub chat_template: Option<ChatTemplateUse>,
    /// How many groups to print.
    #[arg(long, default_value_t = 2)]
    pub examples: usize,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl From<InspectArgs> for InspectOptions {
    fn from(a: InspectArgs) -> Self {
        InspectOptions {
            files: a.files,
            config: a.config,
            tokenizer: a.tokenizer,
            shape: a.shape,
            max_length: a.max_length,
            max_prompt_length: a.max_prompt_length,
            chat_template: a.chat_template,
            examples: a.examples,
            json: a.json,
        }
    }
}

/// Runs an `epa data` subcommand.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Inspect(a) => crate::data::inspect::inspect(&a.into()),
    }
}
