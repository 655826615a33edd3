//! epa: Energy Preference Alignment and the DPO family for causal language models, on burn.
//!
//! The pipeline, one module per stage:
//! data → model → scores (log-probs per candidate) → losses → train → eval / lab.

pub mod lab;
pub mod losses;
pub mod model;
