//! The pairwise DPO family: DPO (sigmoid), cDPO (label smoothing), robust DPO, IPO, hinge (SLiC).
//!
//! With Δ = (log π_θ − log π_ref)(y⁺) − (log π_θ − log π_ref)(y⁻), per pair (y⁺, y⁻):
//!
//! | name     | per-pair loss                                                        |
//! |----------|----------------------------------------------------------------------|
//! | `dpo`    | −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)   (ε = `label_smoothing`; ε > 0 is cDPO) |
//! | `robust` | (−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)) / (1 − 2ε)   (Chowdhury et al. 2024)    |
//! | `hinge`  | max(0, 1 − βΔ)   (SLiC / RSO)                                         |
//! | `ipo`    | (Δ' − 1/(2β))², Δ' from per-token log-ratios (log ratio / length) like TRL; `length_normalize = false` uses summed log-ratios (the IPO paper's Eq. 17 as written) |
//!
//! **Several negatives.** A prompt with k real strong negatives (plus weak ones when `use_weak`)
//! gives k pairs (y⁺, y⁻ₖ); its loss is the *mean over its pairs*, and the batch loss is the mean
//! over prompts that have at least one pair. With one strong negative per prompt this is exactly
//! TRL's DPO loss.

use anyhow::{Result, ensure};
use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu};
use serde::{Deserialize, Serialize};

use super::Role::{self, Strong, Weak};
use super::batch::{PromptLosses, ScoreBatch};
use super::config::check_positive;
use super::term::Loss;

/// Parameters of `dpo` / `cdpo`, and (as `RobustParams`) of `robust`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DpoParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β of the implicit reward r = β·(log π_θ − log π_ref) (TRL's `beta`).
    pub beta: f64,
    /// ε: probability that a preference label is flipped (cDPO / robust), in [0, 0.5).
    pub label_smoothing: f64,
    /// Also form pairs (positive, weak negative).
    pub use_weak: bool,
}

impl Default for DpoParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, label_smoothing: 0.0, use_weak: false }
    }
}

/// Parameters of `robust`: the same as DPO's, ε being the assumed flip rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RobustParams(pub DpoParams);

/// DPO's schema, inlined into the `robust` term: a derived `$ref` would carry DPO's
/// `additionalProperties: false` and reject the term's `name`.
impl schemars::JsonSchema for RobustParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RobustParams".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        DpoParams::json_schema(generator)
    }
}

/// Parameters of `ipo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IpoParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// β is IPO's regularisation τ: the target margin is 1/(2β).
    pub beta: f64,
    /// Divide each log-ratio by its response length (TRL's default); false = summed log-ratios.
    pub length_normalize: bool,
    /// Also form pairs (positive, weak negative).
    pub use_weak: bool,
}

impl Default for IpoParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, length_normalize: true, use_weak: false }
    }
}

/// Parameters of `hinge`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HingeParams {
    /// Weight of this term in the total loss.
    pub weight: f64,
    /// The margin is 1/β in log-ratio units.
    pub beta: f64,
    /// Also form pairs (positive, weak negative).
    pub use_weak: bool,
}

impl Default for HingeParams {
    fn default() -> Self {
        Self { weight: 1.0, beta: 0.1, use_weak: false }
    }
}

/// Checks that `label_smoothing` (ε, a label-flip probability) is in [0, 0.5).
pub fn check_label_smoothing(eps: f64) -> Result<()> {
    ensure!((0.0..0.5).contains(&eps), "label_smoothing must be in [0, 0.5), got {eps}");
    Ok(())
}

/// Negative roles paired with the positive.
pub(crate) fn pair_roles(use_weak: bool) -> &'static [Role] {
    if use_weak { &[Strong, Weak] } else { &[Strong] }
}

/// Mean over each prompt's (positive, negative) pairs of `per_pair(chosen, rejected)`, where
/// `chosen` is `[P, 1]` (broadcast) and `rejected` is `[P, C]`; prompts without a real positive
/// or without any real negative are skipped.
pub fn pairwise(
    batch: &ScoreBatch,
    scores: Tensor<2>,
    roles: &[Role],
    loss: &str,
    per_pair: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
) -> Result<PromptLosses> {
    batch.require_roles(roles, loss)?;
    let p = batch.dims().0;
    let pairs = batch.valid(roles); // [P, C] 1.0 on real negatives
    let chosen = scores.clone().narrow(1, 0, 1);
    let per_pair = per_pair(chosen, scores).mask_fill(pairs.clone().lower_elem(0.5), 0.0);
    let n_pairs = pairs.sum_dim(1).reshape([p]);
    let values = per_pair.sum_dim(1).reshape([p]) / n_pairs.clone().clamp_min(1.0);
    let valid = batch.positive_valid() * n_pairs.greater_elem(0.5).float();
    Ok(PromptLosses::new(values, valid))
}

/// −(1−ε)·logσ(z) − ε·logσ(−z).
pub(crate) fn smoothed_sigmoid_loss(z: Tensor<2>, eps: f64) -> Tensor<2> {
    let clean = log_sigmoid(z.clone()).mul_scalar(-(1.0 - eps));
    if eps == 0.0 { clean } else { clean - log_sigmoid(z.neg()).mul_scalar(eps) }
}

/// DPO / cDPO.
impl Loss for DpoParams {
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
        check_label_smoothing(self.label_smoothing)
    }
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses> {
        let lr = batch.logratios("dpo")?;
        pairwise(batch, lr, pair_roles(self.use_weak), "dpo", |c, r| {
            smoothed_sigmoid_loss((c - r).mul_scalar(self.beta), self.label_smoothing)
        })
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}

/// Robust DPO: unbiased under label flips with probability ε.
impl Loss for RobustParams {
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
        let p = &self.0;
        let lr = batch.logratios("robust")?;
        let eps = p.label_smoothing;
        pairwise(batch, lr, pair_roles(p.use_weak), "robust", |c, r| {
            let z = (c - r).mul_scalar(p.beta);
            let clean = log_sigmoid(z.clone()).mul_scalar(-(1.0 - eps));
            let flipped = log_sigmoid(z.neg()).mul_scalar(eps);
            (clean + flipped).div_scalar(1.0 - 2.0 * eps)
        })
    }
    fn uses_weak(&self) -> bool {
        self.0.use_weak
    }
}

/// IPO: squared distance of the log-ratio margin to 1/(2β).
impl Loss for IpoParams {
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
        let mut lr = batch.logratios("ipo")?;
        if self.length_normalize {
            lr = lr / batch.lengths();
        }
        let target = 1.0 / (2.0 * self.beta);
        pairwise(batch, lr, pair_roles(self.use_weak), "ipo", |c, r| (c - r).sub_scalar(target).square())
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}

/// Hinge (SLiC): max(0, 1 − βΔ).
impl Loss for HingeParams {
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
        let lr = batch.logratios("hinge")?;
        pairwise(batch, lr, pair_roles(self.use_weak), "hinge", |c, r| {
            relu((c - r).mul_scalar(-self.beta).add_scalar(1.0))
        })
    }
    fn uses_weak(&self) -> bool {
        self.use_weak
    }
}
