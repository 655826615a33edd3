//! `epa generate --model M --prompt "..." [--temperature T --top-p P --seed S]`

use anyhow::Result;

use crate::model::generate::{SampleConfig, generate};
use crate::model::load::load_model;
use crate::text::Message;

/// Arguments of `epa generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model: a Hugging Face folder, a .gguf file, `smollm2`, or a hub id.
    #[arg(long, default_value = crate::model::load::SMOLLM2)]
    pub model: String,
    /// User message(s); each is rendered with the chat template and answered.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed (no effect at temperature 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `--device` and `--dtype`.
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// Runs `epa generate`: answers every prompt and prints each answer under its prompt.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let mut cfg = SampleConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_ids: Vec::new(),
    };
    cfg.validate()?;
    let device = args.device.device()?;
    let mut lm = load_model(&args.model, &device)?;
    lm.model.precision = args.device.dtype;
    let codec = lm.codec()?;
    let prompts = args
        .prompt
        .iter()
        .map(|p| {
            let text = codec.render_chat(&[Message { role: "user".into(), content: p.clone() }], true)?;
            codec.encode(&text, false)
        })
        .collect::<Result<Vec<_>>>()?;
    cfg.stop_ids = codec.eos_token_id().into_iter().collect();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    lm.check_length(longest + args.max_new_tokens, "the longest prompt + --max-new-tokens")?;
    let outs = generate(&lm.model, &lm.rope, &prompts, &cfg, lm.pad_id(), &device);
    for (p, o) in args.prompt.iter().zip(outs) {
        println!("### {p}\n{}", codec.decode(&o, true)?);
    }
    Ok(())
}
