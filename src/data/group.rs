//! Grouping rules: a [`RawGroup`] (labelled pair(s) or scored responses) becomes a [`PreferenceGroup`]
//! — one prompt, one positive, one or more strong negatives.

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{GroupingConfig, Strategy, Ties};
use super::error::{FieldError, Problem};
use super::shape::{Label, Prompt, RawCandidate, RawGroup};

/// A response's text and its score, if the data gives one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The response text (for a conversation, its last assistant message's content).
    pub text: String,
    /// Its score from the data (higher is better), if any.
    pub score: Option<f32>,
}

/// One prompt with its positive and strong negatives (text, before tokenisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceGroup {
    /// The prompt as the data gives it (with the row's system message, if any, prepended).
    pub prompt: Prompt,
    /// The preferred response: TRL's `chosen`, or the best-scored one.
    pub positive: Candidate,
    /// Rejected responses to the same prompt that passed the grouping rules (at least one).
    pub strong: Vec<Candidate>,
}

/// The outcome of grouping one row: a group (maybe with some negatives filtered out) or a reason.
#[derive(Debug)]
pub struct Grouped {
    /// The group, unless the whole row was dropped.
    pub group: Option<PreferenceGroup>,
    /// Candidates filtered out by the rules (ties, score gap), with where they were.
    pub dropped: Vec<FieldError>,
    /// Why the whole row was dropped, if it was.
    pub reason: Option<Problem>,
}

fn candidate(c: &RawCandidate) -> Candidate {
    Candidate { text: c.text.clone(), score: c.score }
}

/// FNV-1a, for a per-prompt seed independent of row order.
pub(crate) fn hash_str(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether `neg` may stand as a negative to `pos` under the tie / gap rules (unscored pairs always may).
fn admissible(pos: Option<f32>, neg: Option<f32>, cfg: &GroupingConfig) -> Result<(), Problem> {
    let (Some(p), Some(n)) = (pos, neg) else {
        return Ok(());
    };
    let gap = p - n;
    if gap == 0.0 {
        return if cfg.ties == Ties::Keep { Ok(()) } else { Err(Problem::Tie) };
    }
    if cfg.min_score_gap > 0.0 && gap < cfg.min_score_gap {
        return Err(Problem::ScoreGap);
    }
    Ok(())
}

/// Applies `cfg` to one row. `seed` drives `best_vs_random`; the draw depends on the prompt, not the row
/// position, so reordering the file does not change it.
pub fn group(raw: RawGroup, cfg: &GroupingConfig, seed: u64) -> Grouped {
    let mut dropped = Vec::new();
    let labelled = raw.candidates.iter().any(|c| c.label == Label::Chosen);
    let (pos, mut negs): (RawCandidate, Vec<RawCandidate>) = if labelled {
        let mut it = raw.candidates.into_iter();
        let pos = it.next().expect("labelled rows start with chosen");
        (pos, it.collect())
    } else {
        let mut c = raw.candidates;
        // Stable sort, best first; scores are finite (checked when read).
        c.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
        if c.len() < 2 {
            return Grouped { group: None, dropped, reason: Some(Problem::NoNegatives) };
        }
        let pos = c.remove(0);
        (pos, c)
    };
    negs.retain(|n| match admissible(pos.score, n.score, cfg) {
        Ok(()) => true,
        Err(p) => {
            dropped.push(FieldError::new(n.field.clone(), p));
            false
        }
    });
    if negs.is_empty() {
        return Grouped { group: None, dropped, reason: Some(Problem::NoNegatives) };
    }
    if !labelled {
        negs = match cfg.strategy {
            Strategy::BestVsRest => negs,
            Strategy::BestVsWorst => negs.split_off(negs.len() - 1),
            Strategy::BestVsRandom => {
                let mut rng = ChaCha8Rng::seed_from_u64(hash_str(seed, &raw.prompt.key()));
                vec![negs.choose(&mut rng).expect("non-empty").clone()]
            }
        };
    }
    if let Some(max) = cfg.max_strong
        && negs.len() > max
    {
        // Keep the lowest-scored (clearest) negatives; for unscored lists, the first ones.
        let cut = negs.len() - max;
        negs = if labelled { negs[..max].to_vec() } else { negs.split_off(cut) };
    }
    let group =
        PreferenceGroup { prompt: raw.prompt, positive: candidate(&pos), strong: negs.iter().map(candidate).collect() };
    Grouped { group: Some(group), dropped, reason: None }
}
