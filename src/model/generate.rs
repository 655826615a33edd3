//! Batched sampling with a key/value cache: greedy (temperature 0) or temperature + top-p,
//! reproducible under a seed.
//!
//! Prompts of different lengths are right-padded for the prefill; every later step appends one
//! token per row at that row's own position, with padded keys masked out.

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::llama::{CausalLm, ForwardInputs, KvCache};
use super::rope::Rope;

/// How [`generate`] draws tokens: length limit, temperature, nucleus, seed and stop ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleConfig {
    /// Most new tokens generated per row (a stop id can end a row sooner).
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling mass (1.0 = off).
    pub top_p: f32,
    /// Seed of the ChaCha8 stream all draws come from: the same seed, model and prompts give the same output.
    pub seed: u64,
    /// Generation stops for a row when it emits one of these ids (kept in the output).
    pub stop_ids: Vec<u32>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop_ids: vec![] }
    }
}

impl SampleConfig {
    /// A usable temperature (finite, ≥ 0) and nucleus (0 < top_p ≤ 1).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature must be a finite number ≥ 0 (0 = greedy), got {}",
            self.temperature
        );
        anyhow::ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "top_p must be in (0, 1] (1 = off), got {}", self.top_p);
        Ok(())
    }
}

/// Picks the next token from a row of logits.
pub fn sample_token(logits: &[f32], cfg: &SampleConfig, rng: &mut ChaCha8Rng) -> u32 {
    if cfg.temperature <= 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &x)| (i, (((x - m) / cfg.temperature) as f64).exp())).collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    if cfg.top_p < 1.0 {
        // The nucleus is a prefix of the probabilities sorted in decreasing order. When the tokens
        // above a small threshold already hold `top_p` of the mass, the nucleus lies among them, so
        // sorting only those gives the same prefix (and the same sums) as sorting the whole vocabulary.
        let head: Vec<(usize, f64)> = probs.iter().copied().filter(|p| p.1 >= 1e-6).collect();
        if head.iter().map(|p| p.1).sum::<f64>() >= cfg.top_p as f64 + 1e-9 {
            probs = head;
        }
        probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0)));
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (k, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= cfg.top_p as f64 {
                keep = k + 1;
                break;
            }
        }
        probs.truncate(keep);
        let z: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= z);
    }
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for &(i, p) in &probs {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    probs.last().map(|p| p.0 as u32).unwrap_or(0)
}

/// Generates continuations for each prompt; returns only the new tokens of each row.
pub fn generate(
    model: &CausalLm,
    rope: &Rope,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    pad_id: u32,
    device: &Device,
) -> Vec<Vec<u32>> {
    generate_scored(model, rope, prompts, cfg, pad_id, device).into_iter().map(|g| g.ids).collect()
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new tokens (a stop token, if one was drawn, is kept last).
    pub ids: Vec<u32>,
    /// log π(ids | prompt) under the model itself (temperature 1, no top-p truncation), summed over
    /// the new tokens: the sequence log-prob a scoring pass would give, for free.
    pub logp: f64,
}

/// log-softmax of `logits` at `tok`, in f64.
fn log_prob(logits: &[f32], tok: u32) -> f64 {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum();
    logits[tok as usize] as f64 - m - z.ln()
}

/// [`generate`], also returning each continuation's log-prob. Identical prompts (several samples of one
/// prompt) are prefilled once and their key/value cache shared.
pub fn generate_scored(
    model: &CausalLm,
    rope: &Rope,
    prompts: &[Vec<u32>],
    cfg: &SampleConfig,
    pad_id: u32,
    device: &Device,
) -> Vec<Generated> {
    let b = prompts.len();
    if b == 0 || cfg.max_new_tokens == 0 {
        return vec![Generated { ids: Vec::new(), logp: 0.0 }; b];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Unique prompts, and for each row the unique prompt it repeats.
    let mut unique: Vec<&[u32]> = Vec::new();
    let mut of_row: Vec<i64> = Vec::with_capacity(b);
    for p in prompts {
        let u = unique.iter().position(|q| *q == p.as_slice()).unwrap_or_else(|| {
            unique.push(p);
            unique.len() - 1
        });
        of_row.push(u as i64);
    }
    let layout = Layout::padded(&unique, pad_id);
    let t0 = layout.len;
    let mut cache = KvCache::default();
    let inputs = ForwardInputs::from_layout(&layout, rope, device);
    let hidden = model.hidden(&inputs, Some(&mut cache)); // [U, T0, H]
    let h = hidden.dims()[2];
    let last: Vec<i64> = unique.iter().enumerate().map(|(i, p)| (i * t0 + p.len().max(1) - 1) as i64).collect();
    let n_unique = unique.len();
    let idx = Tensor::from_data(TensorData::new(last, [n_unique]), device);
    let mut logits = model.logits(hidden.reshape([n_unique * t0, h]).select(0, idx)); // [U, V]
    if n_unique < b {
        let rows = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(of_row.clone(), [b]), device);
        logits = logits.select(0, rows.clone());
        for (k, v) in cache.layers.iter_mut().flatten() {
            *k = k.clone().select(0, rows.clone());
            *v = v.clone().select(0, rows.clone());
        }
    }
    // Which cached keys are real (not padding), per row.
    let mut key_valid: Vec<Vec<bool>> = prompts.iter().map(|p| (0..t0).map(|t| t < p.len()).collect()).collect();
    let mut out: Vec<Generated> = vec![Generated { ids: Vec::new(), logp: 0.0 }; b];
    let mut done = vec![false; b];
    for step in 0..cfg.max_new_tokens {
        let v = logits.dims()[1];
        let host: Vec<f32> = super::host_f32(logits);
        let mut next = vec![pad_id as i64; b];
        for r in 0..b {
            if done[r] {
                continue;
            }
            let row = &host[r * v..(r + 1) * v];
            let tok = sample_token(row, cfg, &mut rng);
            out[r].ids.push(tok);
            out[r].logp += log_prob(row, tok);
            next[r] = tok as i64;
            if cfg.stop_ids.contains(&tok) {
                done[r] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == cfg.max_new_tokens {
            break;
        }
        // One new position per row, at that row's own position.
        let positions: Vec<i64> = (0..b).map(|r| (prompts[r].len() + step) as i64).collect();
        for kv in key_valid.iter_mut() {
            kv.push(true);
        }
        let s = key_valid[0].len();
        let mut bias = vec![0f32; b * s];
        for r in 0..b {
            for j in 0..s {
                if !key_valid[r][j] {
                    bias[r * s + j] = -1.0e30;
                }
            }
        }
        let (cos, sin) = rope.tables(&positions, b, 1, device);
        let inputs = ForwardInputs {
            input_ids: Tensor::from_data(TensorData::new(next, [b, 1]), device),
            cos,
            sin,
            bias: Tensor::<2>::from_data(TensorData::new(bias, [b, s]), device).reshape([b, 1, 1, s]),
        };
        let hidden = model.hidden(&inputs, Some(&mut cache)); // [B, 1, H]
        logits = model.logits(hidden.reshape([b, h]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nucleus by sorting the whole vocabulary, as the definition reads.
    fn nucleus_reference(logits: &[f32], t: f32, top_p: f64) -> Vec<(usize, f64)> {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut p: Vec<(usize, f64)> =
            logits.iter().enumerate().map(|(i, &x)| (i, (((x - m) / t) as f64).exp())).collect();
        let z: f64 = p.iter().map(|q| q.1).sum();
        p.iter_mut().for_each(|q| q.1 /= z);
        p.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        let mut acc = 0.0;
        let keep = p.iter().position(|q| {
            acc += q.1;
            acc >= top_p
        });
        p.truncate(keep.map_or(p.len(), |k| k + 1));
        p
    }

    #[test]
    fn top_p_sampling_draws_from_the_exact_nucleus() {
        let mut draw = ChaCha8Rng::seed_from_u64(7);
        for trial in 0..40 {
            // Peaked and flat vocabularies, so the shortcut is taken and skipped.
            let scale = if trial % 2 == 0 { 8.0 } else { 0.05 };
            let logits: Vec<f32> = (0..5000).map(|_| draw.random::<f32>() * scale).collect();
            let cfg = SampleConfig { temperature: 0.8, top_p: 0.9, seed: trial, ..Default::default() };
            let nucleus: Vec<usize> = nucleus_reference(&logits, 0.8, 0.9).iter().map(|q| q.0).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(trial);
            for _ in 0..50 {
                let tok = sample_token(&logits, &cfg, &mut rng) as usize;
                assert!(nucleus.contains(&tok), "token {tok} outside the nucleus of {} tokens", nucleus.len());
            }
        }
    }
}
