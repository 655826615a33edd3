//! Plackett–Luce over the full ranking of the candidates by their true scores.
//!
//! Sort the candidate set K(x) by r* (highest first): y₍₁₎ ≻ y₍₂₎ ≻ … ≻ y₍K₎. With
//! r = β·(log π_θ − log π_ref):
//! `L(x) = −Σ_{k=1}^{K−1} [ r(y₍ₖ₎) − log Σ_{j≥k} exp r(y₍ⱼ₎) ]`.
//! With K = 2 (and r*(y⁺) > r*(y⁻)) it is DPO. Ties in r* are broken by column order (earlier
//! column ranks higher, so the positive wins ties).
//!
//! Computed without sorting: for each candidate i, the set of candidates ranked at or below it is
//! `{j : r*_j < r*_i, or r*_j = r*_i and j ≥ i}` — a `[P, C, C]` mask built with tensor ops.

use anyhow::Result;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::batch::{NEG_FILL, PromptLosses, ScoreBatch, at_least};
use super::config::check_positive;
use super::infonca::list_roles;
use super::term::Loss;

/// Parameters of `plackett_luce`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PlackettLuceParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β of the implicit reward r = β·(log π_θ − log π_ref).
    pub beta: f64,
    /// Weak negatives join the ranking (their true scores are then needed too).
    pub include_weak: bool,
}

impl Default for PlackettLuceParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, include_weak: false }
    }
}

impl Loss for PlackettLuceParams {
    fn weight(&self) -> f64 {
        self.weight
    }
    fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }
    fn beta(&self) -> Option<f64> {
        Some(self.beta)
    }
    fn validate(&self) -> Result<()> {
        check_positive("beta", self.beta)
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        plackett_luce(batch, self)
    }
    fn needs_true_scores(&self) -> bool {
        true
    }
    fn uses_weak(&self) -> bool {
        self.include_weak
    }
}

/// Plackett–Luce negative log-likelihood of the true-score ranking, per prompt.
fn plackett_luce(batch: &ScoreBatch, p: &PlackettLuceParams) -> Result<PromptLosses> {
    let roles = list_roles(p.include_weak);
    batch.require_roles(&roles[1..], "plackett_luce")?;
    let (n, c) = batch.dims();
    let cand = batch.valid(roles); // [P, C]
    let s = batch.true_scores("plackett_luce")?;
    let r = batch.rewards(p.beta, "plackett_luce")?;

    // below[p, i, j] = 1 when candidate j is ranked at or below candidate i.
    let s_i = s.clone().reshape([n, c, 1]).expand([n, c, c]);
    let s_j = s.reshape([n, 1, c]).expand([n, c, c]);
    let upper: Vec<f32> = (0..c * c).map(|k| if k % c >= k / c { 1.0 } else { 0.0 }).collect();
    let upper = Tensor::<3>::from_data(TensorData::new(upper, [1, c, c]), &batch.device());
    let tie = s_i.clone().equal(s_j.clone()).float() * upper;
    let below = s_i.greater(s_j).float() + tie;
    let keep = below * cand.clone().reshape([n, c, 1]) * cand.clone().reshape([n, 1, c]);

    // lse[p, i] = log Σ_{j below i} exp r_j; the i-th factor is r_i − lse[p, i].
    let r_j = r.clone().reshape([n, 1, c]).expand([n, c, c]);
    let r_j = r_j.mask_fill(keep.lower_elem(0.5), NEG_FILL);
    let max = r_j.clone().detach().max_dim(2);
    let lse = ((r_j - max.clone()).exp().sum_dim(2).log() + max).reshape([n, c]);
    let losses = ((lse - r) * cand.clone()).sum_dim(1).reshape([n]);
    Ok(PromptLosses::new(losses, batch.positive_valid() * at_least(&cand, 2)))
}
