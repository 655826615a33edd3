//! EPA — Energy Preference Alignment (Hong et al., arXiv 2412.13862, ICML 2025).
//!
//! For a prompt x with positive y⁺, strong negatives S(x) (rejected answers to x) and weak
//! negatives W(x) (answers to other prompts, scored under x), with r = β·(log π_θ − log π_ref):
//!
//! ```text
//! L_EPA(x) = log( w + Σ_{y ∈ S ∪ W} λ_y · exp( r(x,y) − r(x,y⁺) ) )
//!          = logsumexp( [log w] ++ [ r(x,y) − r(x,y⁺) + log λ_y  for y ∈ S ∪ W ] )
//! ```
//! averaged over prompts. With w = 1 it is the softmax cross-entropy with the positive at index
//! 0; with one strong negative, no weak one and w = 1 it is DPO.

use anyhow::{Result, ensure};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::Role::{self, Positive, Strong, Weak};
use super::batch::{PromptLosses, ScoreBatch, at_least, masked_logsumexp};
use super::config::check_positive;
use super::term::Loss;

/// Hyper-parameters of the EPA term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EpaParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β of the implicit reward r = β·(log π_θ − log π_ref).
    pub beta: f64,
    /// The constant w inside the log (> 0); w = 1 is the softmax cross-entropy.
    pub w: f64,
    /// λ for strong negatives (> 0), added as log λ inside the logsumexp.
    pub lambda_strong: f64,
    /// λ for weak negatives (> 0).
    pub lambda_weak: f64,
    /// Use strong negatives (false = weak-only ablation).
    pub use_strong: bool,
    /// Use weak negatives (false = strong-only ablation).
    pub use_weak: bool,
    /// Use at most this many strong negatives per prompt (its first real ones); `None` = all.
    pub max_strong: Option<usize>,
    /// Use at most this many weak negatives per prompt (its first real ones); `None` = all.
    pub max_weak: Option<usize>,
}

impl Default for EpaParams {
    fn default() -> Self {
        Self {
            weight: 1.0,
            beta: 0.1,
            w: 1.0,
            lambda_strong: 1.0,
            lambda_weak: 1.0,
            use_strong: true,
            use_weak: true,
            max_strong: None,
            max_weak: None,
        }
    }
}

impl EpaParams {
    /// `[P, C]` 1.0 on the real negatives EPA uses: per prompt, the first `max_strong` real
    /// strong and the first `max_weak` real weak negatives of the enabled kinds.
    fn negatives(&self, batch: &ScoreBatch) -> Tensor<2> {
        let kinds = [(self.use_strong, Strong, self.max_strong), (self.use_weak, Weak, self.max_weak)];
        let mut used = batch.valid(&[]);
        for (_, role, max) in kinds.into_iter().filter(|k| k.0) {
            let real = batch.valid(&[role]);
            used = used
                + match max {
                    None => real,
                    Some(k) => real.clone().cumsum(1).lower_equal_elem(k as f64).float() * real,
                };
        }
        used
    }
}

impl Loss for EpaParams {
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
        check_positive("w", self.w)?;
        check_positive("lambda_strong", self.lambda_strong)?;
        check_positive("lambda_weak", self.lambda_weak)?;
        ensure!(self.use_strong || self.use_weak, "use_strong and use_weak are both false: no negatives left");
        Ok(())
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        epa(batch, self)
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}

/// EPA loss per prompt. A prompt counts when its positive and at least one used negative are real.
fn epa(batch: &ScoreBatch, p: &EpaParams) -> Result<PromptLosses> {
    let kinds: Vec<Role> =
        [(p.use_strong, Strong), (p.use_weak, Weak)].into_iter().filter_map(|(on, k)| on.then_some(k)).collect();
    batch.require_roles(&kinds, "epa")?;
    let r = batch.rewards(p.beta, "epa")?; // [P, C]
    let r_pos = r.clone().narrow(1, 0, 1); // [P, 1]
    // Column offsets: log w on the positive's slot (where r − r⁺ = 0), log λ on negatives.
    let (log_w, log_ls, log_lw) = (p.w.ln() as f32, p.lambda_strong.ln() as f32, p.lambda_weak.ln() as f32);
    let offsets = batch.column_values(|_, role| match role {
        Positive => log_w,
        Strong => log_ls,
        Weak => log_lw,
    });
    let negatives = p.negatives(batch); // [P, C]
    // The positive's slot holds log w and is always kept (even when the row is skipped).
    let keep = negatives.clone() + batch.column_values(|j, _| if j == 0 { 1.0 } else { 0.0 });
    let losses = masked_logsumexp(r - r_pos + offsets, keep);
    Ok(PromptLosses::new(losses, batch.positive_valid() * at_least(&negatives, 1)))
}
