//! `epa eval`: a policy judged against its reference, the way papers report it.
//!
//! For each prompt, N answers are sampled from the policy and N from the reference with the same
//! seed and settings (common random numbers); a judge (a reward model, or the demo's gold reward)
//! scores every answer; the policy's answers are also scored under both models for the KL estimate.
//! Reported, each with a bootstrap 95% interval over prompts ([`stats`]):
//!
//! * **reward**: mean judge reward of each model's answers;
//! * **win rate**: policy answer j against reference answer j of the same prompt (ties ½);
//! * **length-controlled win rate**: the win rate at zero length difference (AlpacaEval 2.0-style
//!   logistic regression, [`stats::lc_win_rate`]);
//! * **KL**: mean of log π_θ(y|x) − log π_ref(y|x) over the policy's answers, per answer and per token
//!   ([`sample`]);
//! * **length**: mean answer length in tokens.
//!
//! The pipeline, one idea per file: [`prompts`] (reading) → [`sample`] (answers, log-probs) →
//! [`judge`] (rewards) → [`stats`] (numbers) → [`report`] (eval.json, eval.md, rewards.png).
//! The demo's evaluation (`crate::demo::evaluate`) runs on the same sampling, judging, win-rate and
//! KL code.

pub mod judge;
pub mod prompts;
pub mod report;
pub mod sample;
pub mod stats;

use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::data::ChatTemplateUse;
use crate::data::store::encode_prompt;
use crate::device::DeviceOptions;
use crate::model::generate::SampleConfig;
use crate::model::load::{LoadedModel, load_model};
use judge::{JudgeSpec, LoadedJudge};
use prompts::EvalPrompt;
use report::{EvalReport, PromptResult, Side};

/// Prompt ids of every prompt under a model's own tokenizer, through its chat template as `template`
/// says (`always`, the default, renders string prompts as a user turn, as AlpacaEval does; `auto`
/// keeps them verbatim, as training with TRL's rule saw them).
pub(crate) fn encode_prompts(
    lm: &LoadedModel,
    prompts: &[EvalPrompt],
    template: ChatTemplateUse,
) -> Result<Vec<Vec<u32>>> {
    let codec = lm.codec()?;
    prompts
        .iter()
        .map(|p| {
            let encoded = encode_prompt(codec, &p.prompt, template)
                .map_err(|why| anyhow::anyhow!("{}: field `prompt`: {why}", p.loc))?;
            Ok(encoded.with_context(|| format!("{}: rendering the prompt for {}", p.loc, lm.source.display()))?.ids)
        })
        .collect()
}

/// Decoded answers (stop token removed) of every prompt.
fn texts(lm: &LoadedModel, ids: &[Vec<Vec<u32>>], stop: &[u32]) -> Result<Vec<Vec<String>>> {
    let codec = lm.codec()?;
    ids.iter().map(|a| a.iter().map(|s| sample::answer_text(codec, s, stop)).collect()).collect()
}

/// An f32 setting as the decimal the user typed (0.95, not 0.949999988079071).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

fn lengths(ids: &[Vec<u32>]) -> Vec<f64> {
    ids.iter().map(|s| s.len() as f64).collect()
}

/// What `epa eval` compares and how ([`run`]'s options; the command line's `EvalArgs` converts into it).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The model judged: a Hugging Face folder, a .gguf file, `smollm2`, or a hub id.
    pub policy: String,
    /// The model it is compared with (same tokenizer): KL is measured against it, wins are counted
    /// against its answers.
    pub reference: String,
    /// Prompts: JSONL, JSON or Parquet rows with a `prompt` (string or messages); preference files work.
    pub prompts: PathBuf,
    /// A sequence-classification reward model, or the demo's gold reward (needs a topic per prompt).
    pub judge: JudgeSpec,
    /// Answers sampled per prompt from each model.
    pub samples: usize,
    /// Sampling seed (both models draw with it: common random numbers) and bootstrap seed.
    pub seed: u64,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    pub top_p: f32,
    /// Most new tokens per sampled answer.
    pub max_new_tokens: usize,
    /// Sequences per generation batch (and conversations per reward-model pass).
    pub batch: usize,
    /// Output folder: eval.json, eval.md, rewards.png.
    pub out: PathBuf,
    /// Bootstrap resamples of the prompts for the 95% intervals (0: no intervals).
    pub bootstrap: usize,
    /// Which prompts go through the chat template (`always`: string prompts become a user turn).
    pub chat_template: ChatTemplateUse,
    /// Device and compute dtype of both models.
    pub device: DeviceOptions,
}

/// Runs the evaluation and writes its report into `args.out`.
pub fn run(args: &EvalOptions) -> Result<EvalReport> {
    ensure!(args.samples >= 1, "--samples must be ≥ 1");
    ensure!(args.max_new_tokens >= 1, "--max-new-tokens must be ≥ 1");
    ensure!(args.batch >= 1, "--batch must be ≥ 1");
    let t0 = Instant::now();
    let prompts = prompts::read_prompts(&args.prompts)?;
    let device = args.device.device()?;

    // The judge first: a wrong judge or a prompt it cannot judge fails before any sampling.
    let loaded = LoadedJudge::load(&args.judge, &device, args.device.dtype, "--judge")?;
    let judge = loaded.judge(args.batch);
    judge.check(&prompts)?;

    let load = |spec: &str, what: &str| -> Result<LoadedModel> {
        eprintln!("loading {what} {spec}");
        let mut lm = load_model(spec, &device).with_context(|| format!("--{what} {spec}"))?;
        lm.model.precision = args.device.dtype;
        Ok(lm)
    };
    let policy = load(&args.policy, "policy")?;
    let reference = load(&args.reference, "reference")?;
    let prompt_ids = encode_prompts(&policy, &prompts, args.chat_template)?;
    if encode_prompts(&reference, &prompts, args.chat_template)? != prompt_ids {
        bail!(
            "--policy {} and --reference {} tokenise the prompts differently: the KL estimate and a fair \
             comparison need one tokenizer and chat template",
            args.policy,
            args.reference
        );
    }
    let longest = prompt_ids.iter().map(Vec::len).max().unwrap_or(0) + args.max_new_tokens;
    policy.check_length(longest, "the longest prompt + --max-new-tokens")?;
    reference.check_length(longest, "the longest prompt + --max-new-tokens")?;
    let stop: Vec<u32> = policy.codec()?.eos_token_id().into_iter().collect();
    let cfg = SampleConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_ids: stop.clone(),
    };
    cfg.validate()?;

    let (n, p) = (args.samples, prompts.len());
    let pb = crate::train::progress_bar((4 * n * p) as u64, true, "sampling and judging");
    let pad = policy.pad_id();
    let (pol_model, ref_model) = (policy.model.valid(), reference.model.valid());
    let pol = sample::sample_scored(
        (&pol_model, &policy.rope),
        (&ref_model, &reference.rope),
        pad,
        &prompt_ids,
        n,
        &cfg,
        args.batch,
        |k| pb.inc(k as u64),
    );
    let ref_gen = sample::sample_answers(
        &ref_model,
        &reference.rope,
        reference.pad_id(),
        &prompt_ids,
        n,
        &cfg,
        args.batch,
        |k| pb.inc(k as u64),
    );
    let ref_ids: Vec<Vec<Vec<u32>>> = ref_gen.into_iter().map(|g| g.into_iter().map(|s| s.ids).collect()).collect();
    let pol_ids: Vec<Vec<Vec<u32>>> = pol.iter().map(|s| s.ids.clone()).collect();
    let (pol_texts, ref_texts) = (texts(&policy, &pol_ids, &stop)?, texts(&reference, &ref_ids, &stop)?);

    let mut per_prompt = Vec::with_capacity(p);
    for (i, prompt) in prompts.iter().enumerate() {
        let pr = judge.score(prompt, &pol_texts[i])?;
        pb.inc(n as u64);
        let rr = judge.score(prompt, &ref_texts[i])?;
        pb.inc(n as u64);
        per_prompt.push(PromptResult {
            prompt: prompt.to_json(),
            topic: prompt.topic.clone(),
            win_rate: stats::win_rate(&pr, &rr),
            kl: pol[i].kl(),
            kl_per_token: pol[i].kl_per_token(),
            policy: Side { answers: pol_texts[i].clone(), rewards: pr, lengths: pol[i].lengths() },
            reference: Side { answers: ref_texts[i].clone(), rewards: rr, lengths: lengths(&ref_ids[i]) },
            policy_logp: pol[i].logp.clone(),
            reference_logp: pol[i].ref_logp.clone(),
        });
    }
    pb.finish_and_clear();

    let settings = BTreeMap::from([
        ("policy".to_string(), json!(args.policy)),
        ("reference".to_string(), json!(args.reference)),
        ("prompts".to_string(), json!(args.prompts.display().to_string())),
        ("judge".to_string(), json!(args.judge.to_string())),
        ("samples".to_string(), json!(n)),
        ("seed".to_string(), json!(args.seed)),
        ("temperature".to_string(), json!(short(args.temperature))),
        ("top_p".to_string(), json!(short(args.top_p))),
        ("max_new_tokens".to_string(), json!(args.max_new_tokens)),
        ("chat_template".to_string(), json!(args.chat_template)),
        ("bootstrap".to_string(), json!(args.bootstrap)),
        ("device".to_string(), json!(args.device.device.to_string())),
        ("dtype".to_string(), json!(args.device.dtype.to_string())),
        ("batch".to_string(), json!(args.batch)),
        ("lc_ridge".to_string(), json!(stats::LC_RIDGE)),
        ("num_prompts".to_string(), json!(p)),
    ]);
    let metrics = report::summarise(&per_prompt, args.bootstrap, args.seed ^ 0xb007_57a9);
    let r = EvalReport { settings, metrics, per_prompt };
    report::write(&args.out, &r)?;
    eprintln!("wrote {} in {:.1}s", args.out.join("eval.json").display(), t0.elapsed().as_secs_f64());
    Ok(r)
}
