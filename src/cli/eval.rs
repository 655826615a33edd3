//! `epa eval --policy M --reference M --prompts FILE --judge rm:MODEL|gold [...]`: the arguments of
//! [`crate::eval::run`] (as [`crate::eval::EvalOptions`]).

use std::path::PathBuf;

use crate::eval::judge::JudgeSpec;

/// Arguments of `epa eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// The model judged: a Hugging Face folder, a .gguf file, `smollm2`, or a hub id.
    #[arg(long)]
    pub policy: String,
    /// The model it is compared with (same tokenizer): KL is measured against it, wins are counted
    /// against its answers.
    #[arg(long)]
    pub reference: String,
    /// Prompts: JSONL, JSON or Parquet rows with a `prompt` (string or messages); preference files work.
    #[arg(long)]
    pub prompts: PathBuf,
    /// `rm:MODEL` (a sequence-classification reward model: folder or hub id) or `gold` (the demo's
    /// built-in reward; needs a topic per prompt).
    #[arg(long)]
    pub judge: JudgeSpec,
    /// Answers sampled per prompt from each model.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Sampling seed (both models draw with it: common random numbers) and bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Most new tokens per sampled answer.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sequences per generation batch (and conversations per reward-model pass).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Output folder: eval.json, eval.md, rewards.png.
    #[arg(long, default_value = "eval")]
    pub out: PathBuf,
    /// Bootstrap resamples of the prompts for the 95% intervals (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Which prompts go through the chat template: `always` (string prompts become a user turn, as
    /// AlpacaEval and the demo sample), `auto` (TRL's training rule: strings verbatim), `never`.
    #[arg(long, value_enum, default_value = "always")]
    pub chat_template: crate::data::ChatTemplateUse,
    /// `--device` and `--dtype`.
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

impl From<EvalArgs> for crate::eval::EvalOptions {
    fn from(a: EvalArgs) -> Self {
        crate::eval::EvalOptions {
            policy: a.policy,
            reference: a.reference,
            prompts: a.prompts,
            judge: a.judge,
            samples: a.samples,
            seed: a.seed,
            temperature: a.temperature,
            top_p: a.top_p,
            max_new_tokens: a.max_new_tokens,
            batch: a.batch,
            out: a.out,
            bootstrap: a.bootstrap,
            chat_template: a.chat_template,
            device: a.device.into(),
        }
    }
}

/// Runs `epa eval` and prints its report (eval.md) to standard output.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let r = crate::eval::run(&args.into())?;
    print!("{}", crate::eval::report::markdown(&r));
    Ok(())
}
