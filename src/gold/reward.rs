//! The gold reward of the controlled experiment: how positive a response is, and whether it is
//! about the prompt's topic.
//!
//! # Formula
//!
//! For a prompt about `topic` and a response `y`:
//!
//! ```text
//! R(topic, y) = w_s · c(y)  −  w_r · (1 − ρ(topic, y))
//! ```
//!
//! * `c(y)` ∈ [−1, 1] is VADER's compound score of `y` ([`super::Vader::compound`], unrounded);
//! * `ρ(topic, y)` ∈ [0, 1] is the fraction of the topic's content words that occur in `y`, matched
//!   case-insensitively, ignoring punctuation, possessives and regular inflections
//!   ([`super::relevance`]: "cities" matches "city", "baking" matches "bake");
//! * `w_s` = [`GoldRewardConfig::sentiment_weight`] (default 1), `w_r` =
//!   [`GoldRewardConfig::relevance_weight`] (default 2).
//!
//! With the defaults R ∈ [−3, 1]: an on-topic response (ρ = 1) scores c(y) ≥ −1, an off-topic one
//! (ρ = 0) scores c(y) − 2 ≤ −1, so **every off-topic answer is at most as good as every on-topic
//! one** (equal only if both sentiments saturate), whatever its sentiment. That holds whenever
//! `w_r ≥ 2·w_s`.
//!
//! # Why relevance
//!
//! EPA's weak negatives are answers written for *other* prompts, scored under this one. Sentiment
//! alone does not see the prompt: a cheerful answer about coffee would score as high under "Write
//! one sentence about the sea." as under its own prompt, so weak negatives would often be better
//! than the positive and would not be negatives at all. The relevance term makes an answer to
//! another prompt bad for this one, as it is for a human rater.
//!
//! ```no_run
//! use epa::gold::{GoldReward, GoldRewardConfig};
//! let gold = GoldReward::load_default(GoldRewardConfig::default())?;
//! let on = gold.score("the sea", "The sea is wonderful today!");
//! let off = gold.score("the sea", "Coffee is wonderful today!");
//! assert!(on > 0.5 && off < -1.0);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::relevance::Topic;
use super::vader::Vader;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Parameters of the gold reward (serialised with the experiment's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoldRewardConfig {
    /// `w_s`: weight of VADER's compound score.
    pub sentiment_weight: f64,
    /// `w_r`: penalty for a response that mentions none of the topic's words.
    pub relevance_weight: f64,
    /// Match regular inflections ("cities" for "city"); false: exact lowercase words only.
    pub match_inflections: bool,
}

impl Default for GoldRewardConfig {
    fn default() -> Self {
        Self { sentiment_weight: 1.0, relevance_weight: 2.0, match_inflections: true }
    }
}

impl GoldRewardConfig {
    /// Weights must be finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [("sentiment_weight", self.sentiment_weight), ("relevance_weight", self.relevance_weight)] {
            if !w.is_finite() || w < 0.0 {
                bail!("gold reward config: `{name}` must be a finite number ≥ 0, got {w}");
            }
        }
        Ok(())
    }
}

/// The reward and its two terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GoldScore {
    /// `c(y)`: VADER compound of the response, in [−1, 1].
    pub sentiment: f64,
    /// `ρ`: fraction of topic words present, in [0, 1].
    pub relevance: f64,
    /// `R = w_s·c − w_r·(1 − ρ)`.
    pub reward: f64,
}

/// The gold reward: VADER sentiment plus topic relevance (see the module docs for the formula).
#[derive(Debug, Clone)]
pub struct GoldReward {
    vader: Vader,
    config: GoldRewardConfig,
}

impl GoldReward {
    /// The gold reward from a VADER analyser and weights; an error if the weights are invalid.
    pub fn new(vader: Vader, config: GoldRewardConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { vader, config })
    }

    /// With VADER's reference lexicons (fetched and cached on first use).
    pub fn load_default(config: GoldRewardConfig) -> Result<Self> {
        Self::new(Vader::load_default()?, config)
    }

    /// The weights and matching options it scores with.
    pub fn config(&self) -> &GoldRewardConfig {
        &self.config
    }

    /// The VADER analyser of the sentiment term.
    pub fn vader(&self) -> &Vader {
        &self.vader
    }

    /// `R(topic, response)`.
    pub fn score(&self, prompt_topic: &str, response: &str) -> f64 {
        self.score_parts(prompt_topic, response).reward
    }

    /// `ρ(topic, response)`.
    pub fn relevance(&self, prompt_topic: &str, response: &str) -> f64 {
        Topic::new(prompt_topic, self.config.match_inflections).relevance(response)
    }

    /// The reward with its sentiment and relevance terms.
    pub fn score_parts(&self, prompt_topic: &str, response: &str) -> GoldScore {
        let sentiment = self.vader.compound(response);
        let relevance = self.relevance(prompt_topic, response);
        let reward = self.config.sentiment_weight * sentiment - self.config.relevance_weight * (1.0 - relevance);
        GoldScore { sentiment, relevance, reward }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-made lexicon (real VADER ratings of these words), so these tests need no fetch.
    fn gold(config: GoldRewardConfig) -> GoldReward {
        let lexicon =
            "good\t1.9\t0.9\t[2]\nwonderful\t2.7\t0.8\t[3]\nbad\t-2.5\t0.7\t[-2]\nterrible\t-2.1\t0.8\t[-2]\n";
        GoldReward::new(Vader::from_lexicon_text(lexicon, Some("😀\tgrinning face\n")).unwrap(), config).unwrap()
    }

    #[test]
    fn relevance_term_decides_between_topics() {
        let g = gold(GoldRewardConfig::default());
        let on = g.score_parts("the sea", "The sea is good.");
        let off = g.score_parts("the sea", "Coffee is wonderful!");
        assert_eq!((on.relevance, off.relevance), (1.0, 0.0));
        assert!(off.sentiment > on.sentiment, "the off-topic answer is the more positive one");
        assert!(off.reward < on.reward);
        assert!((off.reward - (off.sentiment - 2.0)).abs() < 1e-12);
        assert!((on.reward - on.sentiment).abs() < 1e-12);
    }

    #[test]
    fn off_topic_never_beats_on_topic() {
        let g = gold(GoldRewardConfig::default());
        let on = g.score("cats", "Cats are terrible, bad, BAD, terrible!!!!");
        let off = g.score("cats", "Dogs are wonderful, GOOD, wonderful, good!!!!");
        assert!(on > -1.0 && off < -1.0 && off < on, "on {on} off {off}");
    }

    #[test]
    fn case_punctuation_and_inflection() {
        let g = gold(GoldRewardConfig::default());
        for response in ["CATS!", "a cat.", "(cat)", "the cat's toy", "Cat—good", "«cats»"] {
            assert_eq!(g.relevance("Cats", response), 1.0, "{response}");
        }
        assert_eq!(g.relevance("cats", "category"), 0.0);
        let exact = gold(GoldRewardConfig { match_inflections: false, ..Default::default() });
        assert_eq!(exact.relevance("cats", "a cat"), 0.0);
        assert_eq!(exact.relevance("cats", "CATS"), 1.0);
    }

    #[test]
    fn partial_relevance_is_proportional() {
        let g = gold(GoldRewardConfig::default());
        let s = g.score_parts("rainy days in the city", "The city.");
        assert!((s.relevance - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.reward - (s.sentiment - 2.0 * (2.0 / 3.0))).abs() < 1e-12);
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        let g = gold(GoldRewardConfig::default());
        let empty = g.score_parts("the sea", "");
        assert_eq!(empty, GoldScore { sentiment: 0.0, relevance: 0.0, reward: -2.0 });
        assert_eq!(g.score_parts("the sea", "   \n\t ").reward, -2.0);
        assert_eq!(g.score_parts("", "good").relevance, 1.0); // no topic words: nothing to require
        assert_eq!(g.score_parts("the sea", "!!! ??? ...").relevance, 0.0);
        assert!(g.score("the sea", "sea 😀 good").is_finite());
    }

    #[test]
    fn monotone_in_sentiment() {
        let g = gold(GoldRewardConfig::default());
        let ladder = [
            "The sea is terrible, bad, BAD!",
            "The sea is bad.",
            "The sea is here.",
            "The sea is good.",
            "The sea is very good.",
            "The sea is very good!",
            "The sea is wonderful, GOOD and good!!",
        ];
        let scores: Vec<f64> = ladder.iter().map(|r| g.score("the sea", r)).collect();
        for (w, r) in scores.windows(2).zip(ladder.windows(2)) {
            assert!(w[0] < w[1], "{:?}: {:?}", r, w);
        }
        // Weights scale the terms linearly.
        let double = gold(GoldRewardConfig { sentiment_weight: 2.0, ..Default::default() });
        let (a, b) = (g.score_parts("the sea", ladder[4]), double.score_parts("the sea", ladder[4]));
        assert!((b.reward - 2.0 * a.reward).abs() < 1e-12);
    }

    #[test]
    fn config_round_trip_and_validation() {
        let c: GoldRewardConfig = toml::from_str("relevance_weight = 3.0").unwrap();
        assert_eq!(c, GoldRewardConfig { relevance_weight: 3.0, ..Default::default() });
        let back: GoldRewardConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<GoldRewardConfig>("relevance_wieght = 3.0").is_err());
        let bad = GoldRewardConfig { sentiment_weight: f64::NAN, ..Default::default() };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("sentiment_weight"), "{err}");
        assert!(GoldRewardConfig { relevance_weight: -1.0, ..Default::default() }.validate().is_err());
    }
}
