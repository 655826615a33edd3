//! epa: Energy Preference Alignment and the DPO family for causal language models, on burn.
//!
//! The pipeline, one module per stage:
//! data → model → scores (log-probs per candidate) → losses → train → eval / lab.
//! Beside it: `gold` (the known reward of the controlled experiment) and `artifacts` (the real
//! model and lexicon, fetched from package registries and checked by sha256).

pub mod artifacts;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod demo;
pub mod eval;
pub mod gold;
pub mod lab;
pub mod losses;
pub mod model;
pub mod scores;
pub mod text;
pub mod train;
