//! Answers to evaluate: N samples per prompt from a model (seeded, batched, a prompt's samples share one
//! prefill), decoded to text, and their log-probs under any model by one scoring pass.
//!
//! The KL estimate of a policy π_θ against the reference π_ref, on the policy's own samples y_j ~ π_θ(·|x):
//!
//! ```text
//! KL ≈ (1/N) Σ_j [log π_θ(y_j|x) − log π_ref(y_j|x)]            (nats per answer)
//! KL/token = Σ_j [log π_θ(y_j|x) − log π_ref(y_j|x)] / Σ_j |y_j|  (nats per token)
//! ```
//!
//! Both log-probs come from the same scoring pass ([`log_probs`]), so a policy identical to the
//! reference gives exactly 0. Samples are drawn with the evaluation's temperature and top-p, so this is
//! the usual Monte-Carlo estimate for the sampled policy, not an exact KL. |y| counts the generated
//! tokens, the stop token included when one was drawn.

use anyhow::Result;
use burn::tensor::Device;

use crate::model::generate::{Generated, SampleConfig, generate_scored};
use crate::model::{CausalLm, Rope};
use crate::scores::Scorer;
use crate::text::TextCodec;

/// `n` sampled answers (token ids with the stop token kept, and their log-prob) for each prompt,
/// generated `batch` sequences at a time (a prompt's samples share one prefill). The seed of a batch
/// is derived from `cfg.seed` and the batch's index.
#[allow(clippy::too_many_arguments)]
pub fn sample_answers(
    model: &CausalLm,
    rope: &Rope,
    pad: u32,
    prompts: &[Vec<u32>],
    n: usize,
    cfg: &SampleConfig,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Vec<Vec<Generated>> {
    let device = model.device();
    let jobs: Vec<usize> = (0..prompts.len()).flat_map(|p| std::iter::repeat_n(p, n)).collect();
    let mut out: Vec<Vec<Generated>> = vec![Vec::new(); prompts.len()];
    for (b, chunk) in jobs.chunks(batch.max(1)).enumerate() {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&p| prompts[p].clone()).collect();
        let c = SampleConfig { seed: cfg.seed.wrapping_mul(1_000_003).wrapping_add(b as u64), ..cfg.clone() };
        for (&p, ids) in chunk.iter().zip(generate_scored(model, rope, &rows, &c, pad, &device)) {
            out[p].push(ids);
        }
        progress(chunk.len());
    }
    out
}

/// Answer text: the generated ids without the stop token, decoded, trimmed.
pub fn answer_text(codec: &TextCodec, ids: &[u32], stop: &[u32]) -> Result<String> {
    let end = ids.iter().position(|t| stop.contains(t)).unwrap_or(ids.len());
    Ok(codec.decode(&ids[..end], true)?.trim().to_string())
}

/// Log-prob sums of each `(prompt, responses)` group's responses, in order, `chunk` groups per pass.
pub fn group_sums(
    model: &CausalLm,
    rope: &Rope,
    pad: u32,
    groups: &[(&[u32], Vec<&[u32]>)],
    chunk: usize,
    device: &Device,
) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(groups.len());
    let scorer = Scorer::new(model, rope, pad, device);
    for part in groups.chunks(chunk.max(1)) {
        let sums = crate::model::host_f32(scorer.groups(part));
        let mut it = sums.into_iter();
        for (_, rs) in part {
            out.push(it.by_ref().take(rs.len()).map(f64::from).collect());
        }
    }
    out
}

/// `(prompt, responses)` groups borrowing prompts and per-prompt responses.
pub fn groups<'g>(prompts: &'g [Vec<u32>], responses: &'g [Vec<Vec<u32>>]) -> Vec<(&'g [u32], Vec<&'g [u32]>)> {
    prompts.iter().zip(responses).map(|(p, rs)| (p.as_slice(), rs.iter().map(|r| r.as_slice()).collect())).collect()
}

/// log π(answer | prompt) under `model`, summed over each answer's tokens, per prompt and sample.
pub fn log_probs(
    model: &CausalLm,
    rope: &Rope,
    pad: u32,
    prompts: &[Vec<u32>],
    answers: &[Vec<Vec<u32>>],
) -> Vec<Vec<f64>> {
    group_sums(model, rope, pad, &groups(prompts, answers), 8, &model.device())
}

/// One prompt's samples from a policy, with their log-probs under the policy and the reference.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Generated token ids of each sample (stop token included, prompt excluded).
    pub ids: Vec<Vec<u32>>,
    /// log π_θ(answer | prompt) of each sample, summed over its tokens (nats).
    pub logp: Vec<f64>,
    /// log π_ref(answer | prompt) of each sample, summed over its tokens (nats).
    pub ref_logp: Vec<f64>,
}

impl Scored {
    /// Generated tokens per sample (stop token included).
    pub fn lengths(&self) -> Vec<f64> {
        self.ids.iter().map(|s| s.len() as f64).collect()
    }

    /// Mean over samples of log π_θ − log π_ref (nats per answer).
    pub fn kl(&self) -> f64 {
        self.log_ratio_sum() / self.logp.len().max(1) as f64
    }

    /// Σ (log π_θ − log π_ref) / Σ tokens (nats per token).
    pub fn kl_per_token(&self) -> f64 {
        self.log_ratio_sum() / self.ids.iter().map(Vec::len).sum::<usize>().max(1) as f64
    }

    fn log_ratio_sum(&self) -> f64 {
        self.logp.iter().zip(&self.ref_logp).map(|(a, b)| a - b).sum()
    }
}

/// Samples `n` answers per prompt from `policy` and scores them under `policy` and `reference` (the
/// same tokenizer), in one scoring pass each.
#[allow(clippy::too_many_arguments)]
pub fn sample_scored(
    policy: (&CausalLm, &Rope),
    reference: (&CausalLm, &Rope),
    pad: u32,
    prompts: &[Vec<u32>],
    n: usize,
    cfg: &SampleConfig,
    batch: usize,
    progress: impl FnMut(usize),
) -> Vec<Scored> {
    let generated = sample_answers(policy.0, policy.1, pad, prompts, n, cfg, batch, progress);
    let ids: Vec<Vec<Vec<u32>>> = generated.into_iter().map(|g| g.into_iter().map(|s| s.ids).collect()).collect();
    let logp = log_probs(policy.0, policy.1, pad, prompts, &ids);
    let ref_logp = log_probs(reference.0, reference.1, pad, prompts, &ids);
    ids.into_iter().zip(logp).zip(ref_logp).map(|((ids, logp), ref_logp)| Scored { ids, logp, ref_logp }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_per_answer_and_per_token() {
        let s = Scored { ids: vec![vec![1, 2], vec![3, 4, 5, 6]], logp: vec![-1.0, -4.0], ref_logp: vec![-2.0, -6.0] };
        assert_eq!(s.kl(), 1.5); // (1 + 2) / 2 answers
        assert_eq!(s.kl_per_token(), 0.5); // 3 / 6 tokens
        assert_eq!(s.lengths(), vec![2.0, 4.0]);
    }
}
