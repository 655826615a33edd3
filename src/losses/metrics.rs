//! Training metrics under TRL's names, kept as (sum, count) pairs so that micro-batches and
//! data-parallel shards aggregate exactly: the mean of a merged `Metrics` equals the mean over
//! the whole batch (counts weigh, not averages of averages).
//!
//! Keys (r = the implicit reward, see [`RewardKind`]):
//! - `loss` (derived: Σ_terms weight × mean of `loss/<term>`), `loss/<term>` per term;
//! - `rewards/chosen`, `rewards/rejected` (strong), `rewards/weak`, `logps/chosen`,
//!   `logps/rejected`, `logps/weak`: means over real slots;
//! - `rewards/margins`: r⁺ − mean of the prompt's strong r, over prompts with a strong negative;
//! - `rewards/accuracies`: r⁺ > every strong r; `rewards/accuracies_all`: r⁺ > every negative r;
//! - `prompts/skipped`: fraction of prompts no term could use;
//! - with true scores, over each prompt's positive and strong candidates:
//!   `slope1/pearson` = Pearson(r, r*) averaged over prompts with ≥ 2 candidates and nonzero
//!   variances; `slope1/eps` = ε̂ = mean over prompts (≥ 2 candidates) of Var_k(r_k − r*_k)
//!   (population variance).

use std::collections::BTreeMap;

use anyhow::Result;
use burn::tensor::Tensor;

use super::Role;
use super::batch::ScoreBatch;

/// [`Metrics`] between ranks: keys with the bits of each number.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    stats: Vec<(String, u64, u64)>,
    terms: Vec<(String, u64)>,
}

/// A running sum and its count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SumCount {
    /// Sum of the values added.
    pub sum: f64,
    /// How many items the sum covers (the mean's denominator).
    pub count: f64,
}

/// Metrics that aggregate correctly over micro-batches: sums and counts, not averages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    stats: BTreeMap<String, SumCount>,
    /// `loss/<term>` key → term weight; `loss` is derived from them in [`Metrics::mean`].
    loss_terms: BTreeMap<String, f64>,
}

impl Metrics {
    /// Adds `sum` over `count` items to `key`.
    pub fn add(&mut self, key: &str, sum: f64, count: f64) {
        let s = self.stats.entry(key.to_string()).or_default();
        s.sum += sum;
        s.count += count;
    }

    /// Records a loss term: Σ of its per-prompt losses over `count` prompts, with its weight.
    pub fn add_loss_term(&mut self, label: &str, weight: f64, sum: f64, count: f64) {
        let key = format!("loss/{label}");
        self.add(&key, sum, count);
        self.loss_terms.insert(key, weight);
    }

    /// The metrics as bytes for another rank ([`Metrics::from_bytes`]); every number travels as its
    /// bits, so NaN and infinities arrive unchanged.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            stats: self.stats.iter().map(|(k, s)| (k.clone(), s.sum.to_bits(), s.count.to_bits())).collect(),
            terms: self.loss_terms.iter().map(|(k, w)| (k.clone(), w.to_bits())).collect(),
        };
        serde_json::to_vec(&wire).expect("metrics serialise")
    }

    /// Metrics written by [`Metrics::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Metrics> {
        let Wire { stats, terms } = serde_json::from_slice(bytes)?;
        Ok(Metrics {
            stats: stats
                .into_iter()
                .map(|(k, s, c)| (k, SumCount { sum: f64::from_bits(s), count: f64::from_bits(c) }))
                .collect(),
            loss_terms: terms.into_iter().map(|(k, w)| (k, f64::from_bits(w))).collect(),
        })
    }

    /// Folds another micro-batch's metrics into these.
    pub fn merge(&mut self, other: &Metrics) {
        for (k, s) in &other.stats {
            self.add(k, s.sum, s.count);
        }
        for (k, w) in &other.loss_terms {
            self.loss_terms.insert(k.clone(), *w);
        }
    }

    /// Mean of every key with a nonzero count, plus the derived `loss`.
    pub fn mean(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> =
            self.stats.iter().filter(|(_, s)| s.count > 0.0).map(|(k, s)| (k.clone(), s.sum / s.count)).collect();
        if !self.loss_terms.is_empty() {
            let loss = self.loss_terms.iter().map(|(k, w)| w * out.get(k).copied().unwrap_or(0.0)).sum();
            out.insert("loss".to_string(), loss);
        }
        out
    }

    /// The raw (sum, count) of a key.
    pub fn get(&self, key: &str) -> Option<SumCount> {
        self.stats.get(key).copied()
    }

    /// All raw entries.
    pub fn stats(&self) -> &BTreeMap<String, SumCount> {
        &self.stats
    }
}

/// How the reward metrics define r.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RewardKind {
    /// r = β·(log π_θ − log π_ref) (needs reference log-probs).
    LogRatio {
        /// β scaling the log-ratio.
        beta: f64,
    },
    /// r = β·log π_θ / |y| (reference-free, SimPO / CPO convention).
    AvgLogp {
        /// β scaling the per-token average log-prob.
        beta: f64,
    },
}

/// Host copy of a `[P, C]` tensor as rows of f64.
fn rows(t: &Tensor<2>) -> Result<Vec<Vec<f64>>> {
    let [_, c] = t.dims();
    let flat: Vec<f64> = t.to_data().try_into_vec_as::<f64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(flat.chunks(c.max(1)).map(<[f64]>::to_vec).collect())
}

/// Adds the reward / log-prob / slope-1 metrics of `batch` (computed on host, outside the graph).
pub fn batch_metrics(m: &mut Metrics, batch: &ScoreBatch, kind: RewardKind) -> Result<()> {
    let policy = rows(&batch.policy_logps)?;
    let mask = rows(&batch.mask)?;
    let lengths = rows(&batch.lengths)?;
    let reference = batch.ref_logps.as_ref().map(rows).transpose()?;
    let truth = batch.true_scores.as_ref().map(rows).transpose()?;
    let reward = |p: usize, j: usize| match (kind, &reference) {
        (RewardKind::LogRatio { beta }, Some(r)) => beta * (policy[p][j] - r[p][j]),
        (RewardKind::LogRatio { beta }, None) | (RewardKind::AvgLogp { beta }, _) => {
            beta * policy[p][j] / lengths[p][j].max(1.0)
        }
    };
    let roles = &batch.roles;
    for p in 0..policy.len() {
        let real = |j: usize| mask[p][j] > 0.5;
        let cols = |role: Role| (0..roles.len()).filter(move |&j| roles[j] == role && real(j));
        for (role, name) in [(Role::Strong, "rejected"), (Role::Weak, "weak")] {
            for j in cols(role) {
                m.add(&format!("rewards/{name}"), reward(p, j), 1.0);
                m.add(&format!("logps/{name}"), policy[p][j], 1.0);
            }
        }
        if !real(0) {
            continue;
        }
        let chosen = reward(p, 0);
        m.add("rewards/chosen", chosen, 1.0);
        m.add("logps/chosen", policy[p][0], 1.0);
        let strong: Vec<f64> = cols(Role::Strong).map(|j| reward(p, j)).collect();
        let weak: Vec<f64> = cols(Role::Weak).map(|j| reward(p, j)).collect();
        if !strong.is_empty() {
            let mean = strong.iter().sum::<f64>() / strong.len() as f64;
            m.add("rewards/margins", chosen - mean, 1.0);
            m.add("rewards/accuracies", f64::from(strong.iter().all(|&r| chosen > r)), 1.0);
        }
        if !strong.is_empty() || !weak.is_empty() {
            let all = strong.iter().chain(&weak).all(|&r| chosen > r);
            m.add("rewards/accuracies_all", f64::from(all), 1.0);
        }
        if let Some(truth) = &truth {
            let same_prompt: Vec<usize> = std::iter::once(0).chain(cols(Role::Strong)).collect();
            let r: Vec<f64> = same_prompt.iter().map(|&j| reward(p, j)).collect();
            let t: Vec<f64> = same_prompt.iter().map(|&j| truth[p][j]).collect();
            slope1(m, &r, &t);
        }
    }
    Ok(())
}

/// Per-prompt slope-1 diagnostics of learned rewards `r` against true rewards `t`.
fn slope1(m: &mut Metrics, r: &[f64], t: &[f64]) {
    if let Some((pearson, eps)) = slope1_stats(r, t) {
        if let Some(p) = pearson {
            m.add("slope1/pearson", p, 1.0);
        }
        m.add("slope1/eps", eps, 1.0);
    }
}

/// Slope-1 statistics of one prompt's learned rewards `r` against its true rewards `t`:
/// Pearson(r, t) (`None` when either has no variance) and Var(r − t) (population variance), the
/// prompt's term of ε̂. `None` with fewer than two candidates.
pub fn slope1_stats(r: &[f64], t: &[f64]) -> Option<(Option<f64>, f64)> {
    let k = r.len() as f64;
    if r.len() < 2 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / k;
    let (mr, mt) = (mean(r), mean(t));
    let cov: f64 = r.iter().zip(t).map(|(a, b)| (a - mr) * (b - mt)).sum();
    let var_r: f64 = r.iter().map(|a| (a - mr).powi(2)).sum();
    let var_t: f64 = t.iter().map(|b| (b - mt).powi(2)).sum();
    let pearson = (var_r > 0.0 && var_t > 0.0).then(|| cov / (var_r * var_t).sqrt());
    let d: Vec<f64> = r.iter().zip(t).map(|(a, b)| a - b).collect();
    let md = mean(&d);
    Some((pearson, d.iter().map(|x| (x - md).powi(2)).sum::<f64>() / k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_travel_between_ranks_unchanged_and_merge_to_the_global_mean() {
        let mut a = Metrics::default();
        a.add_loss_term("epa", 0.5, 3.0, 2.0);
        a.add("rewards/chosen", 1.5, 2.0);
        a.add("slope1/pearson", f64::NAN, 1.0);
        let back = Metrics::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back.to_bytes(), a.to_bytes());
        assert!(back.stats["slope1/pearson"].sum.is_nan());
        let mut b = Metrics::default();
        b.add_loss_term("epa", 0.5, 1.0, 1.0);
        b.add("rewards/chosen", 4.5, 1.0);
        let mut all = Metrics::default();
        for m in [&a, &b] {
            all.merge(&Metrics::from_bytes(&m.to_bytes()).unwrap());
        }
        let mean = all.mean();
        assert_eq!(mean["rewards/chosen"], 2.0); // (1.5 + 4.5) / 3, not the mean of 0.75 and 4.5
        assert_eq!(mean["loss/epa"], 4.0 / 3.0);
    }
}
