//! Preference data with a known truth: K answers per prompt sampled from the reference model,
//! scored by the gold reward R, ranked by a Plackett-Luce draw on R/τ (Bradley-Terry when K = 2).
//!
//! The best-ranked answer is `chosen`, the others are `rejected` in random order (so a pairwise
//! method that keeps one strong negative gets a random one, as `ultrafeedback_binarized` was made).
//! `score_*` hold r* = R/τ, the true reward in the labels' own units: the reward an exact
//! preference model would recover, and what the slope-1 metrics compare the learned reward with.

use anyhow::{Context, Result};
use burn::module::Module;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::config::DataGenConfig;
use super::topics;
pub use crate::eval::sample::{answer_text, sample_answers};
use crate::gold::GoldReward;
use crate::model::generate::SampleConfig;
use crate::model::load::LoadedModel;
use crate::text::Message;

/// One prompt of the dataset (the project's standard shape plus the experiment's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The prompt text: "Write one sentence about {topic}."
    pub prompt: String,
    /// The topic the gold reward's relevance term looks for.
    pub topic: String,
    /// The best-ranked answer of the Plackett-Luce draw.
    pub chosen: String,
    /// The other answers, in random order.
    pub rejected: Vec<String>,
    /// r* = R/τ of `chosen` and of each `rejected`.
    pub score_chosen: f64,
    /// r* = R/τ of each `rejected`, in the same order.
    pub score_rejected: Vec<f64>,
    /// The answers in sampling order with their gold reward R (sample j is the reference's j-th draw).
    pub samples: Vec<String>,
    /// The gold reward R of each answer in `samples`.
    pub gold: Vec<f64>,
}

/// The prompt ids of a topic, rendered with the model's chat template.
pub fn prompt_ids(lm: &LoadedModel, topic: &str) -> Result<Vec<u32>> {
    Ok(lm.codec()?.encode_prompt(&[Message::user(topics::prompt(topic))])?.ids)
}

/// A Plackett-Luce ranking of utilities `u` (best first), drawn with Gumbel noise.
pub fn plackett_luce(u: &[f64], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let noisy: Vec<f64> = u
        .iter()
        .map(|x| {
            let v: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            x - (-v.ln()).ln()
        })
        .collect();
    let mut order: Vec<usize> = (0..u.len()).collect();
    order.sort_by(|&a, &b| noisy[b].total_cmp(&noisy[a]));
    order
}

/// The order of a row's `rejected` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Random (the data: a method keeping one gets a random other answer).
    Shuffled,
    /// In the order of the Plackett-Luce draw (online rounds: the last is the worst-ranked).
    Ranked,
}

/// Generates, scores and labels the rows of `topics`.
pub fn make_rows(
    lm: &LoadedModel,
    gold: &GoldReward,
    topics: &[String],
    cfg: &DataGenConfig,
    seed: u64,
    progress: impl FnMut(usize),
) -> Result<Vec<Row>> {
    make_rows_ordered(lm, gold, topics, cfg, seed, Rejected::Shuffled, progress)
}

/// [`make_rows`] with the rejected answers in the given order.
pub fn make_rows_ordered(
    lm: &LoadedModel,
    gold: &GoldReward,
    topics: &[String],
    cfg: &DataGenConfig,
    seed: u64,
    rejected: Rejected,
    progress: impl FnMut(usize),
) -> Result<Vec<Row>> {
    let stop: Vec<u32> = lm.codec()?.eos_token_id().into_iter().collect();
    let prompts = topics.iter().map(|t| prompt_ids(lm, t)).collect::<Result<Vec<_>>>()?;
    let sample = SampleConfig {
        max_new_tokens: cfg.max_new_tokens,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        seed,
        stop_ids: stop.clone(),
    };
    let model = lm.model.valid();
    let answers =
        sample_answers(&model, &lm.rope, lm.pad_id(), &prompts, cfg.samples_per_prompt, &sample, cfg.batch, progress);
    let codec = lm.codec()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1abe);
    let mut rows = Vec::with_capacity(topics.len());
    for (topic, ids) in topics.iter().zip(answers) {
        let samples = ids.iter().map(|a| answer_text(codec, &a.ids, &stop)).collect::<Result<Vec<_>>>()?;
        let gold_r: Vec<f64> = samples.iter().map(|s| gold.score(topic, s)).collect();
        let u: Vec<f64> = gold_r.iter().map(|r| r / cfg.label_temperature).collect();
        let order = plackett_luce(&u, &mut rng);
        let mut rest = order[1..].to_vec();
        if rejected == Rejected::Shuffled {
            rest.shuffle(&mut rng);
        }
        rows.push(Row {
            prompt: topics::prompt(topic),
            topic: topic.clone(),
            chosen: samples[order[0]].clone(),
            rejected: rest.iter().map(|&k| samples[k].clone()).collect(),
            score_chosen: u[order[0]],
            score_rejected: rest.iter().map(|&k| u[k]).collect(),
            samples,
            gold: gold_r,
        });
    }
    Ok(rows)
}

/// Tokens of every sampled answer of `rows` (their texts re-encoded after the rows' prompts): the
/// sampling side of a run's compute.
pub fn sampled_tokens(lm: &LoadedModel, rows: &[Row]) -> Result<usize> {
    let codec = lm.codec()?;
    let mut n = 0;
    for r in rows {
        let p = codec.encode_prompt(&[Message::user(r.prompt.clone())])?;
        for a in &r.samples {
            n += codec.encode_response(&p, a)?.response_ids.len();
        }
    }
    Ok(n)
}

/// Writes `rows` as JSON Lines to `path`, atomically.
pub fn write_rows(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut s, r)?;
        s.push(b'\n');
    }
    crate::model::save::write_atomic(path, &s)
}

/// Reads the rows [`write_rows`] wrote (blank lines skipped).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a data row", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plackett_luce_top_choice_follows_the_softmax() {
        // Top-1 of a Plackett-Luce draw is a softmax choice: P(k first) = e^{u_k} / Σ e^{u}.
        let u = [0.0, 1.0, -1.0, 0.5];
        let z: f64 = u.iter().map(|x: &f64| x.exp()).sum();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 40_000;
        let mut first = [0usize; 4];
        for _ in 0..n {
            first[plackett_luce(&u, &mut rng)[0]] += 1;
        }
        for k in 0..4 {
            let p = u[k].exp() / z;
            let f = first[k] as f64 / n as f64;
            assert!((f - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3, "k={k}: {f} vs {p}");
        }
        // Pairwise marginals are Bradley-Terry: P(1 ranked above 0) = σ(u1 − u0).
        let mut above = 0;
        for _ in 0..n {
            let o = plackett_luce(&u, &mut rng);
            if o.iter().position(|&k| k == 1) < o.iter().position(|&k| k == 0) {
                above += 1;
            }
        }
        let p = 1.0 / (1.0 + (-(u[1] - u[0])).exp());
        assert!((above as f64 / n as f64 - p).abs() < 0.01, "{} vs {p}", above as f64 / n as f64);
    }
}
