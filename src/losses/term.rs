//! [`Loss`]: what a loss term is to [`LossConfig`](super::LossConfig), whatever its formula.

use anyhow::Result;

use super::batch::{PromptLosses, ScoreBatch};

/// A loss term: its hyper-parameters, as read from `[[terms]]`, and the loss per prompt they give.
///
/// Implemented by each term's parameter type, next to its formula; [`LossTerm`](super::LossTerm)
/// holds one of them per variant and answers every question through
/// [`LossTerm::as_loss`](super::LossTerm::as_loss).
///
/// # Adding a loss
///
/// 1. Write `src/losses/<file>.rs` with a parameter type — `#[serde(default, deny_unknown_fields)]`,
///    `schemars::JsonSchema`, a doc comment on each field (it documents the key in
///    `epa config --print-default`), a `Default` — and `impl Loss` for it. Declare the file in
///    `src/losses/mod.rs` (`pub mod <file>;`, and its row of the table there).
/// 2. Add one line to the registry in `src/losses/config.rs`: `Variant(<file>::Params) = "name",`
///    (with optional doc comment and serde attributes, e.g. `#[serde(alias = "other_name")]`).
///
/// That line makes `name = "name"` parse in TOML and JSON (and appear in the JSON schema), adds the
/// name to [`LOSS_NAMES`](super::LOSS_NAMES) and to [`LossTerm::from_name`](super::LossTerm::from_name),
/// and routes [`LossConfig::compute`](super::LossConfig::compute) to [`Loss::per_prompt`].
pub trait Loss {
    /// Weight of the term in the total loss (finite and ≥ 0, which
    /// [`LossTerm::validate`](super::LossTerm::validate) checks).
    fn weight(&self) -> f64;
    /// Replaces the weight (as `LossConfig::from_names` does with its `weights`).
    fn set_weight(&mut self, weight: f64);
    /// β of the term; `None` when it has none (`sft`). The first β is the default of the
    /// `rewards/*` metrics.
    fn beta(&self) -> Option<f64>;
    /// Checks every hyper-parameter but the weight; errors name the field.
    fn validate(&self) -> Result<()>;
    /// The term's loss per prompt, and which prompts it could use.
    fn per_prompt(&self, batch: &ScoreBatch) -> Result<PromptLosses>;
    /// Whether it reads `ref_logps` (false for reference-free terms: the reference model need not run).
    fn needs_reference(&self) -> bool {
        true
    }
    /// Whether it reads `true_scores` (soft labels, rankings).
    fn needs_true_scores(&self) -> bool {
        false
    }
    /// Whether it reads weak-negative columns (else the data loader need not build them).
    fn uses_weak(&self) -> bool;
}
