//! `epa data inspect FILE…`: what a user runs before a long training job — counts, length histograms,
//! dropped rows and why, and a few examples rendered exactly as the model will see them.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::config::{ChatTemplateUse, DataConfig, OnBadRow, ShapeKind};
use super::load::load_groups;
use super::store::GroupStore;
use crate::text::TextCodec;

/// What `epa data inspect` reads and how ([`inspect`]'s options; the command line's `InspectArgs`
/// converts into it).
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Data files (.jsonl, .json, .parquet).
    pub files: Vec<PathBuf>,
    /// A TOML data config (field names, grouping, truncation); FILES replace its `paths`.
    pub config: Option<PathBuf>,
    /// A Hugging Face model or tokenizer folder (tokenizer.json, tokenizer_config.json): lengths are then
    /// in tokens, truncation rules apply and examples are rendered with the chat template.
    pub tokenizer: Option<PathBuf>,
    /// Force a shape: standard, implicit, multi_response (default: detected).
    pub shape: Option<ShapeKind>,
    /// Overrides the config's `truncation.max_length` (tokens: it applies only with `tokenizer`).
    pub max_length: Option<usize>,
    /// Overrides the config's `truncation.max_prompt_length` (tokens: it applies only with
    /// `tokenizer`).
    pub max_prompt_length: Option<usize>,
    /// Which prompts the chat template renders: auto (TRL's rule: message lists do, strings are
    /// tokenised verbatim), always, never (default: the config's `chat_template`, else auto).
    pub chat_template: Option<ChatTemplateUse>,
    /// How many groups to print.
    pub examples: usize,
    /// Print the report as JSON instead of text.
    pub json: bool,
}

fn config(args: &InspectOptions) -> Result<DataConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            DataConfig::from_toml(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("parsing {}", p.display()))?
        }
        None => DataConfig::default(),
    };
    cfg.paths = args.files.clone();
    cfg.on_bad_row = OnBadRow::Skip;
    if let Some(s) = args.shape {
        cfg.shape = s;
    }
    if args.max_length.is_some() {
        cfg.truncation.max_length = args.max_length;
    }
    if args.max_prompt_length.is_some() {
        cfg.truncation.max_prompt_length = args.max_prompt_length;
    }
    if let Some(t) = args.chat_template {
        cfg.chat_template = t;
    }
    Ok(cfg)
}

/// Runs the inspection and prints it to stdout.
pub fn inspect(args: &InspectOptions) -> Result<()> {
    print!("{}", inspect_to_string(args)?);
    Ok(())
}

/// The inspection as text (or JSON with `--json`).
pub fn inspect_to_string(args: &InspectOptions) -> Result<String> {
    let cfg = config(args)?;
    let mut out = String::new();
    let (report, examples, unit) = match &args.tokenizer {
        Some(dir) => {
            let codec = TextCodec::from_hf_folder(dir)?;
            let (store, report) = GroupStore::build(&cfg, &codec)?;
            (report, token_examples(&store, &codec, args.examples)?, "tokens")
        }
        None => {
            let (groups, mut report) = load_groups(&cfg)?;
            let mut ex = String::new();
            for (i, (loc, g)) in groups.iter().enumerate() {
                report.groups += 1;
                report.candidates += 1 + g.strong.len();
                *report.strong_per_group.entry(g.strong.len()).or_default() += 1;
                report.prompt_lengths.push(g.prompt.key().chars().count() as u32);
                let plen = g.prompt.key().chars().count();
                for c in std::iter::once(&g.positive).chain(&g.strong) {
                    report.response_lengths.push(c.text.chars().count() as u32);
                    report.sequence_lengths.push((plen + c.text.chars().count()) as u32);
                }
                if i < args.examples {
                    let _ = writeln!(
                        ex,
                        "── {loc} ──\n[prompt] {:?}\n[positive {}] {:?}",
                        g.prompt,
                        score(g.positive.score),
                        g.positive.text
                    );
                    for (i, s) in g.strong.iter().enumerate() {
                        let _ = writeln!(ex, "[strong {i} {}] {:?}", score(s.score), s.text);
                    }
                }
            }
            (report, ex, "characters")
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["prompt_length"] = stats_json(&report.prompt_lengths);
        v["response_length"] = stats_json(&report.response_lengths);
        v["sequence_length"] = stats_json(&report.sequence_lengths);
        v["length_unit"] = unit.into();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    out.push_str(&report.summary());
    if !report.problems.is_empty() {
        let _ = writeln!(out, "\nfirst problems:");
        for p in &report.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    let _ = writeln!(out, "\nprompt length ({unit}):\n{}", histogram(&report.prompt_lengths));
    let _ = writeln!(out, "response length ({unit}):\n{}", histogram(&report.response_lengths));
    let _ = writeln!(out, "prompt + response length ({unit}), per response:\n{}", histogram(&report.sequence_lengths));
    if args.examples > 0 && !examples.is_empty() {
        let _ = writeln!(out, "examples:\n{examples}");
    }
    Ok(out)
}

fn score(s: Option<f32>) -> String {
    s.map(|s| format!("score {s}")).unwrap_or_default()
}

fn token_examples(store: &GroupStore, codec: &TextCodec, n: usize) -> Result<String> {
    let mut ex = String::new();
    for g in store.groups().take(n) {
        let _ = writeln!(ex, "── {} ── prompt {} tokens", g.source(), g.prompt_ids().len());
        let _ = writeln!(ex, "{}", codec.decode(g.prompt_ids(), false)?);
        for c in g.candidates() {
            let _ = writeln!(
                ex,
                "  [{:?} {} tokens {}] {}",
                c.role(),
                c.ids().len(),
                score(c.score()),
                codec.decode(c.ids(), false)?
            );
        }
    }
    Ok(ex)
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn stats_json(v: &[u32]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    serde_json::json!({
        "min": s[0], "p50": percentile(&s, 0.5), "p90": percentile(&s, 0.9), "p99": percentile(&s, 0.99),
        "max": s[s.len() - 1], "mean": s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64,
    })
}

/// Summary statistics and a 10-bin text histogram.
pub fn histogram(v: &[u32]) -> String {
    if v.is_empty() {
        return "  (none)\n".into();
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let (lo, hi) = (s[0], s[s.len() - 1]);
    let mean = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    let mut out = format!(
        "  n {}  min {lo}  p50 {}  p90 {}  p99 {}  max {hi}  mean {mean:.1}\n",
        s.len(),
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        percentile(&s, 0.99)
    );
    let bins = 10usize;
    let width = ((hi - lo) as usize / bins + 1).max(1);
    let mut counts = vec![0usize; bins];
    for &x in &s {
        counts[((x - lo) as usize / width).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1);
    for (i, c) in counts.iter().enumerate() {
        let a = lo as usize + i * width;
        if a > hi as usize {
            break;
        }
        let bar = "#".repeat((c * 40).div_ceil(top.max(1)));
        let _ = writeln!(out, "  {:>7}–{:<7} {:>7} {bar}", a, a + width - 1, c);
    }
    out
}
