//! NCA (Chen et al. 2024, "Noise Contrastive Alignment"): each candidate's reward is pushed
//! through its own sigmoid instead of a shared softmax, which keeps the positive's likelihood
//! from collapsing.
//!
//! With r = β·(log π_θ − log π_ref):
//! - `nca_pair`, per pair (y⁺, y⁻): `−logσ(r⁺) − ½·logσ(−r⁺) − ½·logσ(−r⁻)` (TRL's `nca_pair`);
//!   several negatives: mean over pairs per prompt, as in [`super::dpo`].
//! - `nca` (K-way) over the candidate set K(x) with targets q (soft softmax(r*/α) or one-hot):
//!   `L(x) = −Σ_{y∈K} q_y·logσ(r_y) − (1/|K|)·Σ_{y∈K} logσ(−r_y)`; with K = 2 and one-hot
//!   targets it equals `nca_pair`.

use anyhow::Result;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

use super::batch::{PromptLosses, ScoreBatch, at_least};
use super::config::check_positive;
use super::dpo::{pair_roles, pairwise};
use super::infonca::{Labels, list_roles, targets};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NcaPairParams {
    pub weight: f64,
    pub beta: f64,
    pub use_weak: bool,
}

impl Default for NcaPairParams {
    fn default() -> Self {
        Self {
            weight: 1.0,
            beta: 0.1,
            use_weak: false,
        }
    }
}

impl NcaPairParams {
    pub fn validate(&self) -> Result<()> {
        check_positive("beta", self.beta)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NcaParams {
    pub weight: f64,
    pub beta: f64,
    /// Temperature α of the soft labels softmax(r*/α).
    pub alpha: f64,
    pub labels: Labels,
    pub include_weak: bool,
}

impl Default for NcaParams {
    fn default() -> Self {
        Self {
            weight: 1.0,
            beta: 0.1,
            alpha: 1.0,
            labels: Labels::Soft,
            include_weak: false,
        }
    }
}

impl NcaParams {
    pub fn validate(&self) -> Result<()> {
        check_positive("beta", self.beta)?;
        check_positive("alpha", self.alpha)
    }
}

/// Pairwise NCA per prompt.
pub fn nca_pair(batch: &ScoreBatch, p: &NcaPairParams) -> Result<PromptLosses> {
    let r = batch.rewards(p.beta, "nca_pair")?;
    pairwise(batch, r, pair_roles(p.use_weak), "nca_pair", |c, r| {
        let chosen = log_sigmoid(c.clone()).neg() - log_sigmoid(c.neg()).mul_scalar(0.5);
        chosen - log_sigmoid(r.neg()).mul_scalar(0.5)
    })
}

/// K-way NCA per prompt; a prompt counts when its positive and ≥ 1 other candidate are real.
pub fn nca(batch: &ScoreBatch, p: &NcaParams) -> Result<PromptLosses> {
    let roles = list_roles(p.include_weak);
    batch.require_roles(&roles[1..], "nca")?;
    let n = batch.dims().0;
    let cand = batch.valid(roles);
    let q = targets(batch, p.labels, p.alpha, &cand, "nca")?;
    let r = batch.rewards(p.beta, "nca")?;
    let k = cand.clone().sum_dim(1).clamp_min(1.0); // [P, 1]
    let attract = (q * log_sigmoid(r.clone())).sum_dim(1);
    let repel = (log_sigmoid(r.neg()) * cand.clone()).sum_dim(1) / k;
    let losses = (attract + repel).reshape([n]).neg();
    Ok(PromptLosses::new(
        losses,
        batch.positive_valid() * at_least(&cand, 2),
    ))
}
