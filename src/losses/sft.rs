//! SFT / NLL term on the positive: `−log π_θ(y⁺|x) / |y⁺|` (token-averaged per sequence) or the
//! summed NLL, averaged over prompts with a real positive. Usually added with a small weight to a
//! preference loss (RPO-style) to keep the positive's likelihood up.
//!
//! Note: TRL's `sft` term averages over all positive tokens of the batch at once; here each
//! sequence is token-averaged first and prompts weigh equally, like every other term, so that
//! micro-batches aggregate exactly.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::batch::{PromptLosses, ScoreBatch};
use super::term::Loss;

/// Parameters of `sft`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SftParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// Divide the positive's NLL by its length (true) or keep the sum (false).
    pub length_normalize: bool,
}

impl Default for SftParams {
    fn default() -> Self {
        Self { weight: 1.0, length_normalize: true }
    }
}

/// NLL of the positive; reference-free, no β, no weak negatives.
impl Loss for SftParams {
    fn weight(&self) -> f64 {
        self.weight
    }
    fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }
    fn beta(&self) -> Option<f64> {
        None
    }
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        let n = batch.dims().0;
        let mut nll = batch.policy().narrow(1, 0, 1).neg();
        if self.length_normalize {
            nll = nll / batch.lengths().narrow(1, 0, 1);
        }
        Ok(PromptLosses::new(nll.reshape([n]), batch.positive_valid()))
    }
    fn needs_reference(&self) -> bool {
        false
    }
    fn uses_weak(&self) -> bool {
        false
    }
}
