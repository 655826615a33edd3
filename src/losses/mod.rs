//! Preference losses as pure functions of a `[prompts × candidates]` score matrix.
//!
//! CONTRACT (shared by the trainer and the theory lab; keep these names and shapes):
//!
//! ```text
//! pub enum Role { Positive, Strong, Weak }
//!
//! pub struct ScoreBatch {
//!     pub policy_logps: Tensor<2>,        // [P, C] Σ log π_θ over response tokens (differentiable)
//!     pub ref_logps: Option<Tensor<2>>,   // [P, C] Σ log π_ref (None for reference-free losses)
//!     pub lengths: Tensor<2>,             // [P, C] response token counts (float)
//!     pub mask: Tensor<2>,                // [P, C] 1.0 = real candidate, 0.0 = padded slot
//!     pub roles: Vec<Role>,               // [C]   role of each column; column 0 is the Positive
//!     pub true_scores: Option<Tensor<2>>, // [P, C] gold rewards / ratings (higher = better)
//! }
//!
//! pub struct LossOutput { pub loss: Tensor<1> /* shape [1], differentiable */, pub metrics: Metrics }
//!
//! // A configured loss (or weighted sum of losses), built from serde config, validated.
//! pub struct LossConfig { ... }           // serde (TOML), `validate() -> anyhow::Result<()>`
//! impl LossConfig { pub fn compute(&self, batch: &ScoreBatch) -> anyhow::Result<LossOutput> }
//!
//! // Metrics that aggregate correctly over micro-batches: sums and counts, not averages.
//! pub struct Metrics { ... }
//! impl Metrics { pub fn merge(&mut self, other: &Metrics); pub fn mean(&self) -> BTreeMap<String, f64> }
//! ```
