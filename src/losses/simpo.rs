//! SimPO (Meng et al. 2024): reference-free, length-averaged DPO with a target margin γ.
//!
//! With s(y) = log π_θ(y|x) / |y| (per-token average), per pair (y⁺, y⁻):
//! `−(1−ε)·logσ(β·(s⁺ − s⁻) − γ) − ε·logσ(−(β·(s⁺ − s⁻) − γ))`, the same form as TRL's CPO
//! trainer with `loss_type = "simpo"` (its `simpo_gamma` is γ here). Several negatives: mean over
//! pairs per prompt, as in [`super::dpo`].

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::batch::{PromptLosses, ScoreBatch};
use super::config::check_positive;
use super::dpo::{check_label_smoothing, pair_roles, pairwise, smoothed_sigmoid_loss};
use super::term::Loss;

/// Parameters of `simpo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SimpoParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// Reward scale on the per-token average log-prob (SimPO's β, typically 2–2.5).
    pub beta: f64,
    /// Target reward margin γ (in reward units).
    pub gamma: f64,
    /// ε: probability that a preference label is flipped (as in cDPO), in [0, 0.5).
    pub label_smoothing: f64,
    /// Also form pairs (positive, weak negative).
    pub use_weak: bool,
}

impl Default for SimpoParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 2.0, gamma: 0.5, label_smoothing: 0.0, use_weak: false }
    }
}

/// SimPO (needs no reference log-probs).
impl Loss for SimpoParams {
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
        anyhow::ensure!(self.gamma.is_finite(), "gamma must be finite, got {}", self.gamma);
        check_label_smoothing(self.label_smoothing)
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        let avg = batch.policy() / batch.lengths();
        pairwise(batch, avg, pair_roles(self.use_weak), "simpo", |c, r| {
            smoothed_sigmoid_loss((c - r).mul_scalar(self.beta).sub_scalar(self.gamma), self.label_smoothing)
        })
    }
    fn needs_reference(&self) -> bool {
        false
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}
