//! Evaluating a policy against its reference (`epa eval`).

pub mod stats;
