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
use super::infonca::{InfoNcaParams, list_roles, targets};
use super::term::Loss;

/// Parameters of `nca_pair`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NcaPairParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β of the implicit reward r = β·(log π_θ − log π_ref).
    pub beta: f64,
    /// Also form pairs (positive, weak negative).
    pub use_weak: bool,
}

impl Default for NcaPairParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, use_weak: false }
    }
}

/// Pairwise NCA.
impl Loss for NcaPairParams {
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
        let r = batch.rewards(self.beta, "nca_pair")?;
        pairwise(batch, r, pair_roles(self.use_weak), "nca_pair", |c, r| {
            let chosen = log_sigmoid(c.clone()).neg() - log_sigmoid(c.neg()).mul_scalar(0.5);
            chosen - log_sigmoid(r.neg()).mul_scalar(0.5)
        })
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}

/// Parameters of K-way `nca`: the same as InfoNCA's (candidate set, targets, β).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NcaParams(pub InfoNcaParams);

/// InfoNCA's schema, inlined into the `nca` term: a derived `$ref` would carry InfoNCA's
/// `additionalProperties: false` and reject the term's `name`.
impl schemars::JsonSchema for NcaParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NcaParams".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        InfoNcaParams::json_schema(generator)
    }
}

/// K-way NCA.
impl Loss for NcaParams {
    fn weight(&self) -> f64 {
        self.0.weight
    }
    fn set_weight(&mut self, weight: f64) {
        self.0.weight = weight;
    }
    fn beta(&self) -> Option<f64> {
        Some(self.0.beta)
    }
    fn validate(&self) -> Result<()> {
        self.0.validate()
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        nca(batch, &self.0)
    }
    fn needs_true_scores(&self) -> bool {
        self.0.needs_true_scores()
    }
    fn uses_weak(&self) -> bool {
        self.0.include_weak
    }
}

/// K-way NCA per prompt; a prompt counts when its positive and ≥ 1 other candidate are real.
fn nca(batch: &ScoreBatch, p: &InfoNcaParams) -> Result<PromptLosses> {
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
    Ok(PromptLosses::new(losses, batch.positive_valid() * at_least(&cand, 2)))
}
