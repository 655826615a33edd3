//! Judging a policy on the held-out prompts, per prompt (so intervals can resample prompts):
//!
//! * **gold**: mean gold reward R of the policy's own samples;
//! * **KL**: mean over those samples of log π_θ(y|x) − log π_ref(y|x) (sequence), and the same summed
//!   over samples divided by their tokens (per token). Samples are drawn with the data's temperature
//!   and top-p, so this is the usual Monte-Carlo estimate of the sampled policy's KL, not an exact one;
//! * **win rate**: sample j against the reference's sample j under the gold reward (ties count ½);
//! * **slope-1**: on the prompt's K scored candidates, the implicit reward r = β·(log π_θ − log π_ref)
//!   against r* = R/τ: Pearson and ε̂ = Var_k(r_k − r*_k), and the rewards themselves (for the
//!   scatter of r against r*); the same on some training prompts (`fit_*`: how close training came
//!   to the preference model's optimum on the data it saw).
//!
//! Sampling uses one seed for every policy, so methods are compared on common random numbers.
//!
//! Sampling, the gold judge, the win rate and the KL estimate are `epa eval`'s own code
//! ([`crate::eval`]); the slope-1 metrics on held-out candidates are the demo's.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::datagen::Row;
use crate::eval::judge::Judge as Judged;
use crate::eval::prompts::EvalPrompt;
use crate::eval::sample::{answer_text, group_sums, groups, sample_scored};
use crate::eval::stats::win_rate;
use crate::gold::GoldReward;
use crate::losses::metrics::slope1_stats;
use crate::model::generate::SampleConfig;
use crate::model::{CausalLm, Rope};
use crate::text::{Message, TextCodec};

/// JSON writes NaN as `null`; read it back as NaN.
fn nan_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// A policy's numbers at one point of its run, one entry per held-out prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointEval {
    /// Training step the policy was evaluated at (0 for the reference).
    pub step: usize,
    /// Mean gold reward R of the policy's samples.
    #[serde(deserialize_with = "nan_vec")]
    pub gold: Vec<f64>,
    /// KL(π_θ ‖ π_ref) estimate: mean over the samples of log π_θ − log π_ref, nats per answer.
    #[serde(deserialize_with = "nan_vec")]
    pub kl: Vec<f64>,
    /// The same log-ratios summed over the samples, divided by their tokens: nats per token.
    #[serde(deserialize_with = "nan_vec")]
    pub kl_per_token: Vec<f64>,
    /// Win rate against the reference's samples in the data under the gold reward (sample j vs
    /// sample j, ties ½).
    #[serde(deserialize_with = "nan_vec")]
    pub win: Vec<f64>,
    /// NaN where a prompt's rewards have no variance.
    #[serde(deserialize_with = "nan_vec")]
    pub pearson: Vec<f64>,
    /// ε̂ = Var_k(r_k − r*_k): population variance over the prompt's candidates of the implicit
    /// reward minus r* (0 = slope-1).
    #[serde(deserialize_with = "nan_vec")]
    pub eps: Vec<f64>,
    /// Mean sampled length (tokens), per prompt.
    #[serde(deserialize_with = "nan_vec")]
    pub length: Vec<f64>,
    /// The implicit reward r of each held-out prompt's candidates (chosen first, then rejected, as
    /// in the data).
    #[serde(default)]
    pub rewards: Vec<Vec<f64>>,
    /// Pearson(r, r*) on the training prompts of `eval.fit_prompts` (empty when 0).
    #[serde(default, deserialize_with = "nan_vec")]
    pub fit_pearson: Vec<f64>,
    /// ε̂ on the training prompts of `eval.fit_prompts`.
    #[serde(default, deserialize_with = "nan_vec")]
    pub fit_eps: Vec<f64>,
    /// The implicit rewards of those training prompts' candidates.
    #[serde(default)]
    pub fit_rewards: Vec<Vec<f64>>,
    /// The first sample of the first two prompts, for the report.
    pub examples: Vec<(String, String)>,
}

/// Rows' scored candidates, encoded, with r* and the reference's log-probs: what the slope-1
/// metrics need.
struct Candidates {
    prompts: Vec<Vec<u32>>,
    /// Candidates in row order: chosen, then rejected.
    candidates: Vec<Vec<Vec<u32>>>,
    truth: Vec<Vec<f64>>,
    ref_sums: Vec<Vec<f64>>,
}

impl Candidates {
    fn new(reference: &CausalLm, rope: &Rope, pad: u32, codec: &TextCodec, rows: &[Row]) -> Result<Self> {
        let mut prompts = Vec::new();
        let mut candidates = Vec::new();
        let mut truth = Vec::new();
        for r in rows {
            let msgs = [Message::user(r.prompt.clone())];
            let p = codec.encode_prompt(&msgs)?;
            let texts = std::iter::once(&r.chosen).chain(&r.rejected);
            let ids = texts.map(|t| Ok(codec.encode_response(&p, t)?.response_ids)).collect::<Result<Vec<_>>>()?;
            prompts.push(p.ids);
            candidates.push(ids);
            truth.push(std::iter::once(r.score_chosen).chain(r.score_rejected.iter().copied()).collect());
        }
        let mut c = Candidates { prompts, candidates, truth, ref_sums: vec![] };
        c.ref_sums = c.log_probs(reference, rope, pad);
        Ok(c)
    }

    fn log_probs(&self, model: &CausalLm, rope: &Rope, pad: u32) -> Vec<Vec<f64>> {
        if self.prompts.is_empty() {
            return vec![];
        }
        group_sums(model, rope, pad, &groups(&self.prompts, &self.candidates), 8, &model.device())
    }

    /// The implicit rewards β·(log π_θ − log π_ref) of every candidate under `policy`.
    fn rewards(&self, policy: &CausalLm, rope: &Rope, pad: u32, beta: f64) -> Vec<Vec<f64>> {
        self.log_probs(policy, rope, pad)
            .iter()
            .zip(&self.ref_sums)
            .map(|(p, q)| p.iter().zip(q).map(|(a, b)| beta * (a - b)).collect())
            .collect()
    }

    /// Per-prompt Pearson (NaN where undefined) and ε̂ of learned rewards `r` against r*.
    fn slope1(&self, r: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        r.iter()
            .zip(&self.truth)
            .map(|(r, t)| match slope1_stats(r, t) {
                Some((pearson, eps)) => (pearson.unwrap_or(f64::NAN), eps),
                None => (f64::NAN, f64::NAN),
            })
            .unzip()
    }

    fn zeros(&self) -> Vec<Vec<f64>> {
        self.truth.iter().map(|t| vec![0.0; t.len()]).collect()
    }
}

/// Everything about the held-out prompts that does not depend on the policy, computed once.
pub struct Judge<'a> {
    reference: &'a CausalLm,
    rope: &'a Rope,
    pad: u32,
    codec: &'a TextCodec,
    gold: &'a GoldReward,
    held: &'a [Row],
    prompts: Vec<Vec<u32>>,
    held_candidates: Candidates,
    fit_candidates: Candidates,
    sample: SampleConfig,
    samples_per_prompt: usize,
    batch: usize,
    stop: Vec<u32>,
}

impl<'a> Judge<'a> {
    /// Encodes the held-out prompts and their candidates, and the `fit` rows' (training prompts
    /// whose slope-1 fit is measured; may be empty), and scores the candidates under the reference,
    /// once; `sample` and `samples_per_prompt` say how policies are sampled, `batch` the sequences
    /// per generation batch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reference: &'a CausalLm,
        rope: &'a Rope,
        pad: u32,
        codec: &'a TextCodec,
        gold: &'a GoldReward,
        held: &'a [Row],
        fit: &[Row],
        sample: SampleConfig,
        samples_per_prompt: usize,
        batch: usize,
    ) -> Result<Self> {
        let held_candidates = Candidates::new(reference, rope, pad, codec, held)?;
        let fit_candidates = Candidates::new(reference, rope, pad, codec, fit)?;
        let stop = codec.eos_token_id().into_iter().collect();
        Ok(Judge {
            reference,
            rope,
            pad,
            codec,
            gold,
            held,
            prompts: held_candidates.prompts.clone(),
            held_candidates,
            fit_candidates,
            sample,
            samples_per_prompt,
            batch,
            stop,
        })
    }

    /// The reference itself, from the data's own samples (KL 0, win rate ½, learned reward 0).
    pub fn reference_point(&self) -> PointEval {
        let n = self.samples_per_prompt;
        let zero = vec![0.0; self.held.len()];
        let (pearson, eps) = self.held_candidates.slope1(&self.held_candidates.zeros());
        let (fit_pearson, fit_eps) = self.fit_candidates.slope1(&self.fit_candidates.zeros());
        PointEval {
            step: 0,
            gold: self.held.iter().map(|r| r.gold[..n].iter().sum::<f64>() / n as f64).collect(),
            kl: zero.clone(),
            kl_per_token: zero,
            win: vec![0.5; self.held.len()],
            pearson,
            eps,
            length: vec![f64::NAN; self.held.len()],
            examples: self.held.iter().take(2).map(|r| (r.prompt.clone(), r.samples[0].clone())).collect(),
            rewards: self.held_candidates.zeros(),
            fit_pearson,
            fit_eps,
            fit_rewards: self.fit_candidates.zeros(),
        }
    }

    /// r* of the held-out candidates and of the fit candidates (the scatter's x).
    pub fn truth(&self) -> (&[Vec<f64>], &[Vec<f64>]) {
        (&self.held_candidates.truth, &self.fit_candidates.truth)
    }

    /// Samples from `policy`, scores the samples and the candidates; `beta` scales the implicit
    /// reward (the method's β).
    pub fn evaluate(&self, policy: &CausalLm, step: usize, beta: f64) -> Result<PointEval> {
        let n = self.samples_per_prompt;
        // The policy's samples with their log-probs under the policy and the reference.
        let scored = sample_scored(
            (policy, self.rope),
            (self.reference, self.rope),
            self.pad,
            &self.prompts,
            n,
            &self.sample,
            self.batch,
            |_| {},
        );
        let gold = Judged::Gold(self.gold);
        let mut e = PointEval {
            step,
            gold: vec![],
            kl: vec![],
            kl_per_token: vec![],
            win: vec![],
            pearson: vec![],
            eps: vec![],
            length: vec![],
            examples: vec![],
            rewards: vec![],
            fit_pearson: vec![],
            fit_eps: vec![],
            fit_rewards: vec![],
        };
        for (i, (row, s)) in self.held.iter().zip(&scored).enumerate() {
            let texts = s.ids.iter().map(|a| answer_text(self.codec, a, &self.stop)).collect::<Result<Vec<_>>>()?;
            let prompt = EvalPrompt::text(format!("held-out prompt {i}"), row.prompt.clone(), Some(row.topic.clone()));
            let g = gold.score(&prompt, &texts)?;
            e.gold.push(g.iter().sum::<f64>() / n as f64);
            e.kl.push(s.kl());
            e.kl_per_token.push(s.kl_per_token());
            e.length.push(s.lengths().iter().sum::<f64>() / n as f64);
            // Sample j against the reference's j-th draw in the data.
            e.win.push(win_rate(&g, &row.gold));
            if i < 2 {
                e.examples.push((row.prompt.clone(), texts[0].clone()));
            }
        }
        e.rewards = self.held_candidates.rewards(policy, self.rope, self.pad, beta);
        (e.pearson, e.eps) = self.held_candidates.slope1(&e.rewards);
        e.fit_rewards = self.fit_candidates.rewards(policy, self.rope, self.pad, beta);
        (e.fit_pearson, e.fit_eps) = self.fit_candidates.slope1(&e.fit_rewards);
        Ok(e)
    }
}
