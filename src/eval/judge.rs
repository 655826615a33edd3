//! What scores an answer: a Hugging Face reward model, or the built-in gold reward of the controlled
//! experiment ([`crate::gold`]).
//!
//! * `rm:MODEL`: the prompt's messages + the answer as the assistant's turn, rendered with the **reward
//!   model's own** chat template and tokenizer (as users of a reward model score with it), read at the
//!   last non-pad token ([`RewardModel`]).
//! * `gold`: R(topic, answer) = VADER compound − 2·(1 − topic relevance) ([`GoldReward`]); the topic
//!   comes from the prompt ([`super::prompts`]).

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::prompts::EvalPrompt;
use crate::device::Precision;
use crate::gold::{GoldReward, GoldRewardConfig};
use crate::model::reward::RewardModel;
use crate::text::Message;

/// `--judge rm:MODEL | gold`, before anything is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgeSpec {
    /// `rm:MODEL`: a sequence-classification reward model (folder or hub id).
    RewardModel(String),
    /// `gold`: the controlled experiment's gold reward ([`crate::gold`]); needs a topic per prompt.
    Gold,
}

impl std::str::FromStr for JudgeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("rm:") {
            Some(m) if !m.is_empty() => Ok(JudgeSpec::RewardModel(m.to_string())),
            Some(_) => Err("`rm:` needs a reward model: rm:FOLDER or rm:org/name".into()),
            None if s == "gold" => Ok(JudgeSpec::Gold),
            None => Err(format!("unknown judge `{s}`: use rm:MODEL (a reward-model folder or hub id) or gold")),
        }
    }
}

impl std::fmt::Display for JudgeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JudgeSpec::RewardModel(m) => write!(f, "rm:{m}"),
            JudgeSpec::Gold => write!(f, "gold"),
        }
    }
}

/// A judge's model, loaded: what [`Judge`] borrows.
pub enum LoadedJudge {
    /// A reward model, its forward pass in the run's compute dtype.
    RewardModel(Box<RewardModel>),
    /// The gold reward.
    Gold(GoldReward),
}

impl LoadedJudge {
    /// Loads `spec` (a reward model on `device`, computing in `precision`); `what` names the
    /// setting in errors (`--judge`, `online.judge`).
    pub fn load(spec: &JudgeSpec, device: &Device, precision: Precision, what: &str) -> Result<LoadedJudge> {
        Ok(match spec {
            JudgeSpec::Gold => LoadedJudge::Gold(GoldReward::load_default(GoldRewardConfig::default())?),
            JudgeSpec::RewardModel(m) => {
                let mut rm = RewardModel::load(m, device).with_context(|| format!("{what} rm:{m}"))?;
                rm.decoder.precision = precision;
                LoadedJudge::RewardModel(Box::new(rm))
            }
        })
    }

    /// The judge, scoring `batch` conversations per reward-model forward pass.
    pub fn judge(&self, batch: usize) -> Judge<'_> {
        match self {
            LoadedJudge::RewardModel(rm) => Judge::RewardModel { rm, batch },
            LoadedJudge::Gold(g) => Judge::Gold(g),
        }
    }
}

/// A loaded judge.
pub enum Judge<'a> {
    /// Conversations scored `batch` per forward pass.
    RewardModel {
        /// The loaded reward model.
        rm: &'a RewardModel,
        /// Conversations per reward-model forward pass (`--batch`).
        batch: usize,
    },
    /// The gold reward R(topic, answer): every prompt needs a topic.
    Gold(&'a GoldReward),
}

impl Judge<'_> {
    /// Checks that every prompt can be judged (the gold reward needs a topic) before any sampling.
    pub fn check(&self, prompts: &[EvalPrompt]) -> Result<()> {
        if let Judge::Gold(_) = self
            && let Some(p) = prompts.iter().find(|p| p.topic.is_none())
        {
            bail!(
                "{}: the gold judge needs a topic: give the row a `topic` field, or use the demo's prompt form \
                 \"Write one sentence about {{topic}}.\"",
                p.loc
            );
        }
        Ok(())
    }

    /// Rewards of `answers` to `prompt`, in order.
    pub fn score(&self, prompt: &EvalPrompt, answers: &[String]) -> Result<Vec<f64>> {
        match self {
            Judge::Gold(g) => {
                let Some(topic) = &prompt.topic else {
                    bail!("{}: the gold judge needs a topic", prompt.loc);
                };
                Ok(answers.iter().map(|a| g.score(topic, a)).collect())
            }
            Judge::RewardModel { rm, batch } => {
                let convs: Vec<Vec<Message>> = answers
                    .iter()
                    .map(|a| {
                        let mut m = prompt.messages();
                        m.push(Message::assistant(a.clone()));
                        m
                    })
                    .collect();
                let s = rm
                    .score_conversations(&convs, *batch)
                    .map_err(|e| anyhow::anyhow!("{}: reward model: {e:#}", prompt.loc))?;
                Ok(s.into_iter().map(f64::from).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_specs_parse_and_print() {
        assert_eq!("gold".parse::<JudgeSpec>(), Ok(JudgeSpec::Gold));
        assert_eq!("rm:org/rm".parse::<JudgeSpec>(), Ok(JudgeSpec::RewardModel("org/rm".into())));
        assert_eq!(JudgeSpec::RewardModel("d/x".into()).to_string(), "rm:d/x");
        assert!("rm:".parse::<JudgeSpec>().unwrap_err().contains("rm:FOLDER"));
        assert!("gpt4".parse::<JudgeSpec>().unwrap_err().contains("unknown judge"));
    }
}
