//! The input of every loss: a `[P prompts × C candidate slots]` score matrix, plus the small
//! tensor helpers the losses share (masked rewards, masked logsumexp, mean over prompts).

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::data::Role;
/// Fill value for masked slots inside a logsumexp: `exp(NEG_FILL − max)` is exactly 0 in f32 for
/// any real score, and unlike `-inf` it never turns into `NaN` (`-inf − -inf`) when a whole row
/// is masked.
pub const NEG_FILL: f32 = -1.0e9;

/// A score batch on the host, row by row (`[P][C]` each): the input of [`ScoreBatch::from_rows`].
/// The fields mean what [`ScoreBatch`]'s do.
#[derive(Clone, Debug)]
pub struct HostRows<'a> {
    /// Σ log π_θ per prompt and candidate.
    pub policy_logps: &'a [Vec<f32>],
    /// Σ log π_ref (`None` for reference-free losses).
    pub ref_logps: Option<&'a [Vec<f32>]>,
    /// Response token counts.
    pub lengths: &'a [Vec<f32>],
    /// 1.0 = real candidate, 0.0 = padded slot.
    pub mask: &'a [Vec<f32>],
    /// Role of each column; column 0 is the positive.
    pub roles: Vec<Role>,
    /// Gold rewards / ratings (higher = better).
    pub true_scores: Option<&'a [Vec<f32>]>,
}

/// Scores of P prompts × C candidate slots, as the losses consume them.
///
/// Every `[P, C]` tensor shares the same layout: column `j` has role `roles[j]`, column 0 is the
/// positive; slots with `mask == 0` are padding and may hold any value (even NaN): the losses
/// never read them. All tensors live on the same device (autodiff or not); only
/// `policy_logps` receives gradients (`ref_logps` and `true_scores` are detached).
#[derive(Clone, Debug)]
pub struct ScoreBatch {
    /// `[P, C]` Σ log π_θ over response tokens (differentiable).
    pub policy_logps: Tensor<2>,
    /// `[P, C]` Σ log π_ref over response tokens (`None` for reference-free losses).
    pub ref_logps: Option<Tensor<2>>,
    /// `[P, C]` response token counts (float; clamped to ≥ 1 where divided by).
    pub lengths: Tensor<2>,
    /// `[P, C]` 1.0 = real candidate, 0.0 = padded slot.
    pub mask: Tensor<2>,
    /// `[C]` role of each column; column 0 is the positive.
    pub roles: Vec<Role>,
    /// `[P, C]` gold rewards / ratings (higher = better).
    pub true_scores: Option<Tensor<2>>,
}

impl ScoreBatch {
    /// Builds a batch from host rows (`[P][C]` each), on `device`. Handy for tests, tools and the lab.
    pub fn from_rows(device: &Device, rows: HostRows) -> Result<Self> {
        let HostRows { policy_logps, ref_logps, lengths, mask, roles, true_scores } = rows;
        let batch = Self {
            policy_logps: matrix(device, policy_logps).context("policy_logps")?,
            ref_logps: ref_logps.map(|r| matrix(device, r)).transpose().context("ref_logps")?,
            lengths: matrix(device, lengths).context("lengths")?,
            mask: matrix(device, mask).context("mask")?,
            roles,
            true_scores: true_scores.map(|s| matrix(device, s)).transpose().context("true_scores")?,
        };
        batch.check()?;
        Ok(batch)
    }

    /// `(P, C)`.
    pub fn dims(&self) -> (usize, usize) {
        let [p, c] = self.policy_logps.dims();
        (p, c)
    }

    /// The device the batch's tensors live on.
    pub fn device(&self) -> Device {
        self.policy_logps.device()
    }

    /// Shapes agree, column 0 is the only positive, and there is at least one prompt.
    pub fn check(&self) -> Result<()> {
        let (p, c) = self.dims();
        ensure!(p > 0 && c > 0, "score batch is empty: policy_logps has shape [{p}, {c}]");
        let named = [
            ("lengths", Some(&self.lengths)),
            ("mask", Some(&self.mask)),
            ("ref_logps", self.ref_logps.as_ref()),
            ("true_scores", self.true_scores.as_ref()),
        ];
        for (name, t) in named {
            if let Some(t) = t {
                ensure!(
                    t.dims() == [p, c],
                    "score batch: {name} has shape {:?}, policy_logps has [{p}, {c}]",
                    t.dims()
                );
            }
        }
        ensure!(self.roles.len() == c, "score batch: {} roles for {c} candidate columns", self.roles.len());
        ensure!(self.roles[0] == Role::Positive, "score batch: column 0 must be the Positive");
        if let Some(j) = self.roles.iter().skip(1).position(|r| *r == Role::Positive) {
            bail!("score batch: column {} is a second Positive (only column 0 may be)", j + 1);
        }
        Ok(())
    }

    /// Number of columns with this role.
    pub fn count_role(&self, role: Role) -> usize {
        self.roles.iter().filter(|r| **r == role).count()
    }

    /// `[P, C]` 1.0 where the slot is real and its column's role is in `roles`.
    pub fn valid(&self, roles: &[Role]) -> Tensor<2> {
        self.valid_columns(|_, role| roles.contains(&role))
    }

    /// `[P, C]` 1.0 where the slot is real and `keep(column, role)` holds.
    pub fn valid_columns(&self, keep: impl Fn(usize, Role) -> bool) -> Tensor<2> {
        let cols = self.column_values(|j, role| if keep(j, role) { 1.0 } else { 0.0 });
        self.mask.clone().greater_elem(0.5).float() * cols
    }

    /// `[1, C]` a constant per column (broadcasts over prompts).
    pub fn column_values(&self, value: impl Fn(usize, Role) -> f32) -> Tensor<2> {
        let c = self.roles.len();
        let v: Vec<f32> = self.roles.iter().enumerate().map(|(j, r)| value(j, *r)).collect();
        Tensor::from_data(TensorData::new(v, [1, c]), &self.device())
    }

    /// `[P]` 1.0 where the positive (column 0) is real.
    pub fn positive_valid(&self) -> Tensor<1> {
        let p = self.dims().0;
        self.mask.clone().narrow(1, 0, 1).greater_elem(0.5).float().reshape([p])
    }

    /// `[P, C]` Σ log π_θ with padded slots set to 0.
    pub fn policy(&self) -> Tensor<2> {
        self.clean(self.policy_logps.clone())
    }

    /// `[P, C]` log π_θ − log π_ref with padded slots set to 0. Errors when `ref_logps` is absent.
    pub fn logratios(&self, loss: &str) -> Result<Tensor<2>> {
        let Some(reference) = &self.ref_logps else {
            bail!("loss '{loss}' needs reference log-probs, but the score batch has ref_logps = None");
        };
        Ok(self.clean(self.policy_logps.clone() - reference.clone().detach()))
    }

    /// `[P, C]` implicit rewards r = β·(log π_θ − log π_ref), padded slots 0.
    pub fn rewards(&self, beta: f64, loss: &str) -> Result<Tensor<2>> {
        Ok(self.logratios(loss)?.mul_scalar(beta))
    }

    /// `[P, C]` response lengths clamped to ≥ 1 (padded slots 1).
    pub fn lengths(&self) -> Tensor<2> {
        self.clean(self.lengths.clone()).clamp_min(1.0)
    }

    /// `[P, C]` true scores with padded slots 0. Errors when `true_scores` is absent.
    pub fn true_scores(&self, loss: &str) -> Result<Tensor<2>> {
        let Some(s) = &self.true_scores else {
            bail!(
                "loss '{loss}' needs true scores (ratings / gold rewards), but the score batch has true_scores = None"
            );
        };
        Ok(self.clean(s.clone().detach()))
    }

    /// Errors unless some column has one of `roles` (a loss with no possible negative).
    pub fn require_roles(&self, roles: &[Role], loss: &str) -> Result<()> {
        ensure!(
            self.roles.iter().any(|r| roles.contains(r)),
            "loss '{loss}' needs at least one {roles:?} candidate column, but the batch's roles are {:?}",
            self.roles
        );
        Ok(())
    }

    /// Replaces padded slots by 0 (a select, so NaN/inf padding cannot leak, nor its gradient).
    fn clean(&self, t: Tensor<2>) -> Tensor<2> {
        let padded = self.mask.clone().lower_elem(0.5);
        t.mask_fill(padded, 0.0)
    }
}

/// A `[P, C]` tensor from host rows.
pub fn matrix(device: &Device, rows: &[Vec<f32>]) -> Result<Tensor<2>> {
    let p = rows.len();
    let c = rows.first().map_or(0, Vec::len);
    if let Some(i) = rows.iter().position(|r| r.len() != c) {
        bail!("row {i} has {} columns, row 0 has {c}", rows[i].len());
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_data(TensorData::new(flat, [p, c]), device))
}

/// Per-prompt losses of one term: `values[p]` is the loss of prompt p (exactly 0 where
/// `valid[p] == 0`, i.e. the prompt is skipped by this loss).
#[derive(Clone, Debug)]
pub struct PromptLosses {
    /// `[P]` loss per prompt, 0 on skipped prompts.
    pub values: Tensor<1>,
    /// `[P]` 1.0 where the prompt counts, 0.0 where it is skipped.
    pub valid: Tensor<1>,
}

impl PromptLosses {
    /// Zeroes `values` wherever `valid` is 0 (with a select: no NaN leaks from skipped rows).
    pub fn new(values: Tensor<1>, valid: Tensor<1>) -> Self {
        let skipped = valid.clone().lower_elem(0.5);
        Self { values: values.mask_fill(skipped, 0.0), valid }
    }

    /// `[1]` mean over counted prompts; 0 (still attached to the graph) when none counts.
    pub fn mean(&self) -> Tensor<1> {
        let n = self.valid.clone().sum().clamp_min(1.0);
        self.values.clone().sum() / n
    }
}

/// `[P]` log Σ_j exp(x[p, j]) over slots where `keep[p, j] > 0.5`. Rows with nothing kept give a
/// large finite negative value (never NaN); callers skip those rows.
pub fn masked_logsumexp(x: Tensor<2>, keep: Tensor<2>) -> Tensor<1> {
    let p = x.dims()[0];
    let x = x.mask_fill(keep.lower_elem(0.5), NEG_FILL);
    // The max is a constant shift (its gradient cancels exactly), so it is detached.
    let max = x.clone().detach().max_dim(1);
    let lse = (x - max.clone()).exp().sum_dim(1).log() + max;
    lse.reshape([p])
}

/// `[P, C]` log-softmax over kept slots (kept slots only are meaningful; others are 0).
pub fn masked_log_softmax(x: Tensor<2>, keep: Tensor<2>) -> Tensor<2> {
    let dropped: Tensor<2, Bool> = keep.lower_elem(0.5);
    log_softmax(x.mask_fill(dropped.clone(), NEG_FILL), 1).mask_fill(dropped, 0.0)
}

/// `[P]` 1.0 where the row has at least `n` kept slots.
pub fn at_least(keep: &Tensor<2>, n: usize) -> Tensor<1> {
    let p = keep.dims()[0];
    keep.clone().sum_dim(1).greater_equal_elem(n as f64 - 0.5).float().reshape([p])
}
