//! The gold reward of the controlled experiment (issue 7): a known, cheap "true reward" that labels
//! preference data, so that what a method learns can be checked against the truth.
//!
//! * [`vader`]: VADER sentiment, a faithful port of `vaderSentiment.py` 3.3.2 (parity-tested);
//! * [`relevance`]: whether a response is about the prompt's topic;
//! * [`reward`]: the two combined, `R = w_s·compound − w_r·(1 − relevance)`;
//! * [`lexicon`]: where VADER's lexicons come from (fetched from PyPI, sha256-checked, cached).

pub mod lexicon;
pub mod relevance;
pub mod reward;
pub mod vader;

pub use reward::{GoldReward, GoldRewardConfig, GoldScore};
pub use vader::{Polarity, Vader};
