//! Evaluating a policy against its reference (`epa eval`).

pub mod judge;
pub mod prompts;
pub mod sample;
pub mod stats;
