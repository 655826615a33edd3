//! InfoNCA (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit
//! Rewards"): a K-way softmax cross-entropy between soft target labels and the implicit rewards.
//!
//! Over the candidate set K(x) (positive and strong negatives, plus weak ones if `include_weak`),
//! with r = β·(log π_θ − log π_ref) and targets q = softmax(r*/α) from the true scores r*:
//! `L(x) = −Σ_{y∈K} q_y · log softmax_K(r)_y`. With one-hot targets on the positive it is EPA
//! (w = 1) over the same candidates.

use anyhow::Result;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::Role::{self, Positive, Strong, Weak};
use super::batch::{PromptLosses, ScoreBatch, at_least, masked_log_softmax};
use super::config::check_positive;
use super::term::Loss;

/// Where the K-way targets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Labels {
    /// softmax(true_scores / α) over the candidates (needs `true_scores`).
    Soft,
    /// All mass on the positive (column 0).
    OneHot,
}

/// Parameters of `infonca`, and (as `NcaParams`) of K-way `nca`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct InfoNcaParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β of the implicit reward r = β·(log π_θ − log π_ref).
    pub beta: f64,
    /// Temperature α of the soft labels softmax(r*/α).
    pub alpha: f64,
    /// The target distribution over the candidates.
    pub labels: Labels,
    /// Weak negatives join the candidate set (their true scores are then needed too).
    pub include_weak: bool,
}

impl Default for InfoNcaParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, alpha: 1.0, labels: Labels::Soft, include_weak: false }
    }
}

impl Loss for InfoNcaParams {
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
        check_positive("beta", self.beta)?;
        check_positive("alpha", self.alpha)
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        infonca(batch, self)
    }
    fn needs_true_scores(&self) -> bool {
        self.labels == Labels::Soft
    }
    fn uses_weak(&self) -> bool {
        self.include_weak
    }
}

/// Roles of the candidate set of the listwise losses.
pub(crate) fn list_roles(include_weak: bool) -> &'static [Role] {
    if include_weak { &[Positive, Strong, Weak] } else { &[Positive, Strong] }
}

/// `[P, C]` target distribution over the candidates `cand` (0 elsewhere).
pub(crate) fn targets(
    batch: &ScoreBatch,
    labels: Labels,
    alpha: f64,
    cand: &Tensor<2>,
    loss: &str,
) -> Result<Tensor<2>> {
    Ok(match labels {
        Labels::Soft => {
            let s = batch.true_scores(loss)?.div_scalar(alpha);
            masked_log_softmax(s, cand.clone()).exp() * cand.clone()
        }
        Labels::OneHot => cand.clone() * batch.column_values(|j, _| if j == 0 { 1.0 } else { 0.0 }),
    })
}

/// InfoNCA loss per prompt; a prompt counts when its positive and ≥ 1 other candidate are real.
fn infonca(batch: &ScoreBatch, p: &InfoNcaParams) -> Result<PromptLosses> {
    let roles = list_roles(p.include_weak);
    batch.require_roles(&roles[1..], "infonca")?;
    let n = batch.dims().0;
    let cand = batch.valid(roles);
    let q = targets(batch, p.labels, p.alpha, &cand, "infonca")?;
    let log_probs = masked_log_softmax(batch.rewards(p.beta, "infonca")?, cand.clone());
    let losses = (q * log_probs).sum_dim(1).reshape([n]).neg();
    Ok(PromptLosses::new(losses, batch.positive_valid() * at_least(&cand, 2)))
}
