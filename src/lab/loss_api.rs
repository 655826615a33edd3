//! The lab's single import of the loss contract (Role, ScoreBatch, LossOutput, LossConfig).
//!
//! Every method the lab trains goes through the same `LossConfig::compute` as the trainer does.
pub use crate::losses::*;
