//! `epa score --model M --data FILE.jsonl [--per-token] [--out OUT.jsonl]`
//!
//! Each input line is `{"input_ids": [...], "completion_mask": [...]}` or
//! `{"prompt": ..., "response": ...}` (a message-list prompt is rendered with the chat template, a
//! string prompt tokenised verbatim, as in training; `--chat-template` changes it). Each output line, in input order, carries `logp_sum`, `n_tokens` and, with
//! `--per-token`, `token_logps` (`token_logps[t] = log p(ids[t+1] | ids[..=t])` for every t, as
//! in the golden fixtures).

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::data::store::encode_prompt;
use crate::data::{ChatTemplateUse, Prompt};
use crate::model::load::{LoadedModel, load_model};
use crate::scores::Scorer;
use crate::text::Message;

/// Arguments of `epa score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// Model: a Hugging Face folder, a .gguf file, `smollm2`, or a hub id.
    #[arg(long)]
    pub model: String,
    /// JSONL input (see above).
    #[arg(long)]
    pub data: PathBuf,
    /// Also write per-token log-probs.
    #[arg(long)]
    pub per_token: bool,
    /// Output JSONL (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which prompts go through the chat template: `auto` (TRL's rule, the training default: message
    /// lists do, plain strings are tokenised verbatim), `always`, `never`.
    #[arg(long, value_enum, default_value = "auto")]
    pub chat_template: ChatTemplateUse,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// `--device` and `--dtype`.
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// One sequence to score: token ids and a completion mask over them.
pub struct ScoreItem {
    /// Token ids of the whole sequence: the prompt, then the response.
    pub ids: Vec<u32>,
    /// 1 for each scored (completion) token, 0 for the others; as long as `ids`.
    pub mask: Vec<u8>,
}

fn messages(v: &Value, what: &str) -> Result<Vec<Message>> {
    match v {
        Value::Array(_) => serde_json::from_value(v.clone())
            .with_context(|| format!("field `{what}` must be a string or a list of {{role, content}} messages")),
        _ => bail!("field `{what}` must be a string or a list of {{role, content}} messages"),
    }
}

/// Parses one input line into ids + completion mask.
pub fn parse_line(line: &str, lm: &LoadedModel, template: ChatTemplateUse) -> Result<ScoreItem> {
    let v: Value = serde_json::from_str(line).context("not valid JSON")?;
    let obj = v.as_object().context("each line must be a JSON object")?;
    if let Some(ids) = obj.get("input_ids") {
        let ids: Vec<u32> =
            serde_json::from_value(ids.clone()).context("field `input_ids` must be a list of non-negative integers")?;
        let mask: Vec<u8> = match obj.get("completion_mask") {
            Some(m) => serde_json::from_value(m.clone()).context("field `completion_mask` must be a list of 0/1")?,
            None => bail!("field `completion_mask` is missing (required with `input_ids`)"),
        };
        if mask.len() != ids.len() {
            bail!("field `completion_mask` has {} entries but `input_ids` has {}", mask.len(), ids.len());
        }
        if ids.is_empty() {
            bail!("field `input_ids` is empty");
        }
        let vocab = lm.config.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            bail!("field `input_ids` holds id {bad}, outside the vocabulary (size {vocab})");
        }
        return Ok(ScoreItem { ids, mask });
    }
    let prompt = obj.get("prompt").context("each line needs `input_ids` or `prompt` + `response`")?;
    let response = obj.get("response").context("field `response` is missing")?;
    let response = match response {
        Value::String(s) => s.clone(),
        Value::Array(_) => {
            let m = messages(response, "response")?;
            m.into_iter().map(|m| m.content).collect::<Vec<_>>().join("")
        }
        _ => bail!("field `response` must be a string or a message list"),
    };
    let prompt = match prompt {
        Value::String(s) => Prompt::Text(s.clone()),
        _ => Prompt::Messages(messages(prompt, "prompt")?),
    };
    let codec = lm.codec()?;
    let prompt = encode_prompt(codec, &prompt, template).map_err(|why| anyhow::anyhow!("field `prompt`: {why}"))??;
    let pair = codec.encode_response(&prompt, &response)?;
    let mut ids = pair.prompt_ids.clone();
    ids.extend_from_slice(&pair.response_ids);
    let mut mask = vec![0u8; pair.prompt_ids.len()];
    mask.extend(std::iter::repeat_n(1u8, pair.response_ids.len()));
    Ok(ScoreItem { ids, mask })
}

/// Scores items in padded batches; returns (logp_sum, n_tokens, per-token log-probs).
pub fn score_items(
    lm: &LoadedModel,
    items: &[ScoreItem],
    batch_size: usize,
    per_token: bool,
    device: &Device,
) -> Vec<(f64, usize, Vec<f32>)> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size.max(1)) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|i| i.ids.as_slice()).collect();
        let masks: Vec<&[u8]> = chunk.iter().map(|i| i.mask.as_slice()).collect();
        let s = Scorer::new(&lm.model, &lm.rope, lm.pad_id(), device).sequences(&seqs, &masks, per_token);
        let toks: Vec<f32> = crate::scores::host_f32(s.token_logps);
        let mut k = 0;
        for item in chunk {
            let n = item.ids.len() - 1;
            let mut sum = 0f64;
            let mut count = 0;
            let mut per = Vec::new();
            for t in 0..n {
                if per_token || item.mask[t + 1] != 0 {
                    let lp = toks[k];
                    k += 1;
                    if item.mask[t + 1] != 0 {
                        sum += lp as f64;
                        count += 1;
                    }
                    if per_token {
                        per.push(lp);
                    }
                }
            }
            out.push((sum, count, per));
        }
    }
    out
}

/// Runs `epa score`: scores every input line in batches and writes one JSON line per input, in
/// order.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let device = args.device.device()?;
    let mut lm = load_model(&args.model, &device)?;
    lm.model.precision = args.device.dtype;
    let file = std::fs::File::open(&args.data).with_context(|| format!("cannot open {}", args.data.display()))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: cannot read line (not UTF-8?)", args.data.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let item =
            parse_line(&line, &lm, args.chat_template).with_context(|| format!("{}:{}", args.data.display(), i + 1))?;
        lm.check_length(item.ids.len(), &format!("the sequence at {}:{}", args.data.display(), i + 1))?;
        items.push(item);
    }
    let scored = score_items(&lm, &items, args.batch_size, args.per_token, &device);
    let mut w: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let target = args.out.as_ref().map_or("standard output".to_string(), |p| p.display().to_string());
    for (sum, n, per) in scored {
        let mut o = json!({"logp_sum": sum, "n_tokens": n});
        if args.per_token {
            o["token_logps"] = json!(per);
        }
        writeln!(w, "{o}").with_context(|| format!("cannot write {target}"))?;
    }
    w.flush().with_context(|| format!("cannot write {target}"))?;
    Ok(())
}
