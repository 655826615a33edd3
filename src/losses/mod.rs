//! Preference losses as pure functions of a `[prompts × candidates]` score matrix.
//!
//! A [`ScoreBatch`] holds, for P prompts × C candidate slots, the summed response log-probs under
//! the policy (differentiable) and the reference, the response lengths, a validity mask, the
//! [`Role`] of each column (column 0 is the positive, then strong and weak negatives) and
//! optional true scores. A [`LossConfig`] — a weighted list of named terms — turns it into a
//! differentiable scalar loss and [`Metrics`] under TRL's names.
//!
//! | name | file | needs |
//! |---|---|---|
//! | `epa` — Energy Preference Alignment | [`epa`] | ref |
//! | `dpo` (`sigmoid`, `cdpo` with `label_smoothing`), `robust`, `ipo`, `hinge` (`slic`) | [`dpo`] | ref |
//! | `simpo` | [`simpo`] | — |
//! | `nca_pair`, `nca` (K-way) | [`nca`] | ref (+ true scores for soft labels) |
//! | `infonca` | [`infonca`] | ref + true scores (soft labels) |
//! | `plackett_luce` | [`plackett_luce`] | ref + true scores |
//! | `sft` | [`sft`] | — |
//!
//! Each term's parameter type implements [`Loss`] in its file; one line per term in the registry of
//! [`config`] makes it a [`LossTerm`] (see [`Loss`] for adding one).
//!
//! Every term is the mean over the prompts it can use (a real positive and at least one real
//! negative); padded slots never reach a logsumexp; a batch no term can use yields a zero loss.
//!
//! # Example
//!
//! ```
//! use burn::tensor::Device;
//! use epa::losses::{HostRows, LossConfig, Role, ScoreBatch};
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = Device::default();
//! // 2 prompts × [positive, strong, weak]; prompt 1 has no weak negative (padded slot).
//! let batch = ScoreBatch::from_rows(&device, HostRows {
//!     policy_logps: &[vec![-10.0, -12.0, -15.0], vec![-8.0, -7.5, 0.0]],
//!     ref_logps: Some(&[vec![-11.0, -11.0, -14.0], vec![-8.0, -8.0, 0.0]]),
//!     lengths: &[vec![5.0, 6.0, 7.0], vec![4.0, 4.0, 1.0]],
//!     mask: &[vec![1.0, 1.0, 1.0], vec![1.0, 1.0, 0.0]],
//!     roles: vec![Role::Positive, Role::Strong, Role::Weak],
//!     true_scores: None,
//! })?;
//! let config = LossConfig::from_toml_str(
//!     r#"
//!     [[terms]]
//!     name = "epa"
//!     beta = 0.1
//!     w = 1.0
//!
//!     [[terms]]
//!     name = "sft"
//!     weight = 0.05
//!     "#,
//! )?;
//! let out = config.compute(&batch)?;
//! let loss: f32 = out.loss.into_scalar();
//! assert!(loss.is_finite());
//! let means = out.metrics.mean();
//! assert_eq!(means["rewards/accuracies"], 0.5); // prompt 0: r⁺ > r⁻; prompt 1: not
//! # Ok(())
//! # }
//! ```

pub mod batch;
pub mod config;
pub mod dpo;
pub mod epa;
pub mod infonca;
pub mod metrics;
pub mod nca;
pub mod plackett_luce;
pub mod sft;
pub mod simpo;
pub mod term;

use burn::tensor::Tensor;

pub use crate::data::Role;
pub use batch::{HostRows, PromptLosses, ScoreBatch};
pub use config::{LOSS_NAMES, LossConfig, LossTerm};
pub use dpo::{DpoParams, HingeParams, IpoParams, RobustParams};
pub use epa::EpaParams;
pub use infonca::{InfoNcaParams, Labels};
pub use metrics::{Metrics, RewardKind, SumCount};
pub use nca::{NcaPairParams, NcaParams};
pub use plackett_luce::PlackettLuceParams;
pub use sft::SftParams;
pub use simpo::SimpoParams;
pub use term::Loss;

/// The result of [`LossConfig::compute`].
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// Shape `[1]`, differentiable w.r.t. `policy_logps`.
    pub loss: Tensor<1>,
    /// Metrics of this batch (merge micro-batches with [`Metrics::merge`]).
    pub metrics: Metrics,
}
