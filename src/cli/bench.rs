//! `epa bench [--rows dpo,epa1+2] [--layouts shared,separate] [--tiny] …`: the arguments of
//! [`crate::bench::run`].

use anyhow::Result;

use crate::bench::{BenchLayout, BenchLoss, BenchOptions, BenchShape};

/// Arguments of `epa bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Prompts per batch.
    #[arg(long, default_value_t = 4)]
    pub prompts: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens per response (candidate).
    #[arg(long, default_value_t = 128)]
    pub response_len: usize,
    /// Which losses to run, comma-separated: `dpo` (2 candidates), `epa1+2` (1 strong + 2 weak
    /// negatives, 4 candidates), `epa1+6` (1 + 6, 8 candidates), or `all`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dpo,epa1+2", hide_possible_values = true)]
    pub rows: Vec<RowArg>,
    /// Layouts, comma-separated: `shared` (prefix sharing), `separate` (padded sequences).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "shared,separate", hide_possible_values = true)]
    pub layouts: Vec<BenchLayout>,
    /// Timed repetitions per row (the median is reported).
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Untimed warm-up steps per row (one global warm-up step always runs first).
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// New tokens per prompt in the generation benchmark (0 = skip it).
    #[arg(long, default_value_t = 32)]
    pub gen_tokens: usize,
    /// Skip the reference-pass timing.
    #[arg(long)]
    pub no_reference: bool,
    /// Let mimalloc return freed memory to the OS after its default delay (the behaviour before
    /// `epa` turned `keep_freed_memory` on for every command): measures what keeping it buys.
    #[arg(long)]
    pub purge_freed_memory: bool,
    /// Dense `[T × T]` attention masks for prefix-shared rows instead of block-sparse attention
    /// (the layout before the block path existed; for before/after comparisons).
    #[arg(long)]
    pub dense_attention: bool,
    /// The unfused log-prob head (logits → log-softmax → gather over the whole `[tokens × V]`)
    /// instead of the fused one (for before/after comparisons).
    #[arg(long)]
    pub full_head: bool,
    /// Model shape (random weights): SmolLM2-135M, Qwen2.5-0.5B, or a 2-layer toy.
    #[arg(long, value_enum, default_value_t = BenchShape::Smollm2_135m)]
    pub shape: BenchShape,
    /// Shorthand for `--shape tiny` (a quick check of the plumbing).
    #[arg(long)]
    pub tiny: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// `--device` and `--dtype`.
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// A value of `--rows`: one loss, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowArg {
    /// DPO: 2 candidates.
    #[value(name = "dpo")]
    Dpo,
    /// EPA with 1 strong + 2 weak negatives: 4 candidates.
    #[value(name = "epa1+2")]
    Epa1Plus2,
    /// EPA with 1 strong + 6 weak negatives: 8 candidates.
    #[value(name = "epa1+6")]
    Epa1Plus6,
    /// All three losses.
    #[value(name = "all")]
    All,
}

impl From<BenchArgs> for BenchOptions {
    fn from(a: BenchArgs) -> Self {
        let rows = if a.rows.contains(&RowArg::All) {
            BenchLoss::ALL.to_vec()
        } else {
            let one = |r: &RowArg| match r {
                RowArg::Dpo => BenchLoss::Dpo,
                RowArg::Epa1Plus2 => BenchLoss::Epa1Plus2,
                RowArg::Epa1Plus6 | RowArg::All => BenchLoss::Epa1Plus6,
            };
            a.rows.iter().map(one).collect()
        };
        BenchOptions {
            prompts: a.prompts,
            prompt_len: a.prompt_len,
            response_len: a.response_len,
            rows,
            layouts: a.layouts,
            reps: a.reps,
            warmup: a.warmup,
            gen_tokens: a.gen_tokens,
            no_reference: a.no_reference,
            purge_freed_memory: a.purge_freed_memory,
            dense_attention: a.dense_attention,
            full_head: a.full_head,
            shape: if a.tiny { BenchShape::Tiny } else { a.shape },
            json: a.json,
            device: a.device.into(),
        }
    }
}

/// Runs `epa bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    crate::bench::run(&args.into()).map(|_| ())
}
