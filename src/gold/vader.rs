//! VADER sentiment (Hutto & Gilbert, ICWSM 2014): a faithful port of the rules of
//! `vaderSentiment.py` 3.3.2 (`SentimentIntensityAnalyzer.polarity_scores`), run over its lexicon.
//!
//! The lexicon (`vader_lexicon.txt`, 7 519 rated tokens) and the emoji lexicon
//! (`emoji_utf8_lexicon.txt`) are not part of this crate: [`Vader::load_default`] fetches them from
//! the `vaderSentiment==3.3.2` wheel on PyPI (sha256-checked, cached; see [`super::lexicon`]).
//!
//! The port reproduces the reference's quirks on purpose, because parity is tested
//! (`tests/gold.rs`, a few hundred sentences scored by the Python package): e.g. the "but" rule
//! rescales the *first* occurrence of each value (`list.index`), tokens whose punctuation-stripped
//! form has ≤ 2 characters keep their punctuation ("ok," stays "ok,"), and an emoji's description is
//! glued to the following character.
//!
//! ```no_run
//! use epa::gold::Vader;
//! let vader = Vader::load_default()?;
//! let s = vader.polarity_scores("VADER is VERY SMART, handsome, and FUNNY!!!");
//! assert!(s.compound > 0.9 && s.neg == 0.0);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod pystr;
pub mod rules;

use anyhow::{Context, Result, bail};
use rules::{C_INCR, N_SCALAR};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// VADER's four scores for one text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Polarity {
    /// Proportion of negative intensity, in [0, 1].
    pub neg: f64,
    /// Proportion of neutral words, in [0, 1].
    pub neu: f64,
    /// Proportion of positive intensity, in [0, 1].
    pub pos: f64,
    /// Normalised sum of valences, in [-1, 1].
    pub compound: f64,
}

/// The VADER analyser: a lexicon of rated tokens plus an emoji → description table.
#[derive(Debug, Clone)]
pub struct Vader {
    lexicon: HashMap<String, f64>,
    /// Only single-character keys: the reference looks emojis up one character at a time, so its
    /// multi-character entries (flags, skin tones, ZWJ sequences) can never match.
    emojis: HashMap<char, String>,
}

/// The words of one text as VADER sees them.
struct Tokens<'a> {
    words: Vec<&'a str>,
    lower: Vec<String>,
    /// Some, but not all, words are ALL CAPS (caps then signal emphasis).
    cap_diff: bool,
}

impl Vader {
    /// Builds the analyser from the text of `vader_lexicon.txt` (`TOKEN<TAB>MEAN<TAB>...` per line)
    /// and, optionally, of `emoji_utf8_lexicon.txt` (`EMOJI<TAB>DESCRIPTION`). Without the emoji
    /// lexicon, emojis are left as they are (the reference always loads it).
    pub fn from_lexicon_text(lexicon: &str, emoji_lexicon: Option<&str>) -> Result<Self> {
        let mut lex = HashMap::new();
        for (n, line) in lines(lexicon) {
            let (word, measure) = two_fields(line).with_context(|| format!("VADER lexicon line {n}"))?;
            let v: f64 = pystr::strip(measure).parse().ok().filter(|v: &f64| v.is_finite()).with_context(|| {
                format!("VADER lexicon line {n}: field 2 (mean rating) `{measure}` is not a number")
            })?;
            lex.insert(word.to_string(), v);
        }
        if lex.is_empty() {
            bail!("VADER lexicon is empty");
        }
        let mut emojis = HashMap::new();
        for (n, line) in emoji_lexicon.map(lines).into_iter().flatten() {
            let (emoji, description) = two_fields(line).with_context(|| format!("VADER emoji lexicon line {n}"))?;
            let mut chars = emoji.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                emojis.insert(c, description.to_string());
            }
        }
        Ok(Self { lexicon: lex, emojis })
    }

    /// Reads the two lexicon files (errors name the file and line).
    pub fn load(lexicon: &Path, emoji_lexicon: Option<&Path>) -> Result<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        let lex_text = read(lexicon)?;
        let emoji_text = emoji_lexicon.map(read).transpose()?;
        Self::from_lexicon_text(&lex_text, emoji_text.as_deref()).with_context(|| match emoji_lexicon {
            Some(e) => format!("in {} / {}", lexicon.display(), e.display()),
            None => format!("in {}", lexicon.display()),
        })
    }

    /// The reference lexicons of `vaderSentiment==3.3.2`, fetched and cached on first use.
    pub fn load_default() -> Result<Self> {
        let paths = super::lexicon::default_paths()?;
        Self::load(&paths.lexicon, Some(&paths.emoji_lexicon))
    }

    /// Number of rated tokens in the lexicon.
    pub fn lexicon_len(&self) -> usize {
        self.lexicon.len()
    }

    /// The lexicon's mean rating of a (lowercase) token.
    pub fn valence(&self, token: &str) -> Option<f64> {
        self.lexicon.get(token).copied()
    }

    /// The scores exactly as `polarity_scores` of the reference returns them: neg/neu/pos rounded
    /// to 3 decimals, compound to 4 (Python's `round`, ties to even).
    pub fn polarity_scores(&self, text: &str) -> Polarity {
        let p = self.polarity_scores_raw(text);
        Polarity {
            neg: pystr::round(p.neg, 3),
            neu: pystr::round(p.neu, 3),
            pos: pystr::round(p.pos, 3),
            compound: pystr::round(p.compound, 4),
        }
    }

    /// The unrounded compound score in [-1, 1] (a smooth gold reward).
    pub fn compound(&self, text: &str) -> f64 {
        self.polarity_scores_raw(text).compound
    }

    /// The scores before the reference's final rounding.
    pub fn polarity_scores_raw(&self, text: &str) -> Polarity {
        let text = self.describe_emojis(text);
        let tokens = Tokens::new(&text);
        let mut sentiments = Vec::with_capacity(tokens.words.len());
        for i in 0..tokens.words.len() {
            let w = tokens.lower[i].as_str();
            // Degree adverbs and "kind of" modify their neighbours and carry no valence themselves.
            let modifier =
                rules::booster(w).is_some() || (w == "kind" && tokens.lower.get(i + 1).is_some_and(|n| n == "of"));
            sentiments.push(if modifier { 0.0 } else { self.word_valence(&tokens, i) });
        }
        but_rule(&tokens.lower, &mut sentiments);
        score(&sentiments, &text)
    }

    /// Replaces every emoji by its description; a description is preceded by a space unless it
    /// starts the text or follows a space. The result is `strip()`ped.
    fn describe_emojis(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            match self.emojis.get(&c) {
                Some(description) => {
                    if !prev_space {
                        out.push(' ');
                    }
                    out.push_str(description);
                    prev_space = false;
                }
                None => {
                    out.push(c);
                    prev_space = c == ' ';
                }
            }
        }
        pystr::strip(&out).to_string()
    }

    fn in_lexicon(&self, lower: &str) -> bool {
        self.lexicon.contains_key(lower)
    }

    /// The valence of word `i` after the "no", caps, booster, negation, idiom and "least" rules.
    fn word_valence(&self, t: &Tokens, i: usize) -> f64 {
        let lower = &t.lower;
        let Some(rating) = self.valence(&lower[i]) else {
            return 0.0;
        };
        let mut v = rating;
        // "no" before another lexicon word negates that word instead of counting itself.
        if lower[i] == "no" && i + 1 < lower.len() && self.in_lexicon(&lower[i + 1]) {
            v = 0.0;
        }
        let no_before = (i > 0 && lower[i - 1] == "no")
            || (i > 1 && lower[i - 2] == "no")
            || (i > 2 && lower[i - 3] == "no" && matches!(lower[i - 1].as_str(), "or" | "nor"));
        if no_before {
            v = rating * N_SCALAR;
        }
        if t.cap_diff && pystr::is_upper(t.words[i]) {
            v += if v > 0.0 { C_INCR } else { -C_INCR };
        }
        for distance in 0..3 {
            // Up to three preceding words that are not themselves rated.
            if i > distance && !self.in_lexicon(&lower[i - distance - 1]) {
                let mut s = booster_shift(t.words[i - distance - 1], &lower[i - distance - 1], v, t.cap_diff);
                if s != 0.0 {
                    s *= [1.0, 0.95, 0.9][distance];
                }
                v += s;
                v = negation_rule(v, lower, distance, i);
                if distance == 2 {
                    v = idiom_rule(v, lower, i);
                }
            }
        }
        self.least_rule(v, lower, i)
    }

    /// "least good" is negated, "at least good" and "very least good" are not.
    fn least_rule(&self, v: f64, lower: &[String], i: usize) -> f64 {
        if i == 0 || lower[i - 1] != "least" || self.in_lexicon(&lower[i - 1]) {
            return v;
        }
        if i > 1 && matches!(lower[i - 2].as_str(), "at" | "very") { v } else { v * N_SCALAR }
    }
}

impl<'a> Tokens<'a> {
    /// Whitespace-split words with leading/trailing ASCII punctuation removed, unless that leaves
    /// ≤ 2 characters (then the token is probably an emoticon like ":)" and is kept whole).
    fn new(text: &'a str) -> Self {
        let words: Vec<&str> = pystr::split_whitespace(text)
            .map(|tok| {
                let stripped = pystr::strip_ascii_punctuation(tok);
                if stripped.chars().count() <= 2 { tok } else { stripped }
            })
            .collect();
        let lower = words.iter().map(|w| w.to_lowercase()).collect();
        let caps = words.iter().filter(|w| pystr::is_upper(w)).count();
        let cap_diff = caps > 0 && caps < words.len();
        Self { words, lower, cap_diff }
    }
}

/// Non-empty lines with 1-based numbers, as the reference reads a lexicon.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n').enumerate().map(|(k, l)| (k + 1, l)).filter(|(_, l)| !pystr::strip(l).is_empty())
}

/// The first two tab-separated fields of a stripped line.
fn two_fields(line: &str) -> Result<(&str, &str)> {
    let mut fields = pystr::strip(line).split('\t');
    match (fields.next(), fields.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("expected at least two tab-separated fields, found one: `{}`", line.trim_end()),
    }
}

/// The shift a booster/dampener `word` gives to a word of valence `v` (0 if it is neither):
/// signed along `v`, plus caps emphasis when the booster alone is shouted.
fn booster_shift(word: &str, lower: &str, v: f64, cap_diff: bool) -> f64 {
    let Some(mut s) = rules::booster(lower) else {
        return 0.0;
    };
    if v < 0.0 {
        s = -s;
    }
    if cap_diff && pystr::is_upper(word) {
        s += if v > 0.0 { C_INCR } else { -C_INCR };
    }
    s
}

/// Negation by the word `distance + 1` places before word `i`; "never so/this good" intensifies,
/// "without (a) doubt" does not negate.
fn negation_rule(v: f64, lower: &[String], distance: usize, i: usize) -> f64 {
    let w = |k: usize| lower[i - k].as_str();
    let so_this = |s: &str| s == "so" || s == "this";
    match distance {
        0 if rules::is_negation(w(1)) => v * N_SCALAR,
        1 if w(2) == "never" && so_this(w(1)) => v * 1.25,
        1 if w(2) == "without" && w(1) == "doubt" => v,
        1 if rules::is_negation(w(2)) => v * N_SCALAR,
        // The reference's `a and b or c`: "so"/"this" right before the word intensifies too.
        2 if (w(3) == "never" && so_this(w(2))) || so_this(w(1)) => v * 1.25,
        2 if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") => v,
        2 if rules::is_negation(w(3)) => v * N_SCALAR,
        _ => v,
    }
}

/// Special-case idioms around word `i` (needs `i >= 3`) replace its valence ("the shit" = 3);
/// two-word dampeners before it ("kind of good") then shift it.
fn idiom_rule(mut v: f64, lower: &[String], i: usize) -> f64 {
    let join = |ks: &[usize]| ks.iter().map(|&k| lower[k].as_str()).collect::<Vec<_>>().join(" ");
    let (one_zero, two_one_zero) = (join(&[i - 1, i]), join(&[i - 2, i - 1, i]));
    let (two_one, three_two_one, three_two) =
        (join(&[i - 2, i - 1]), join(&[i - 3, i - 2, i - 1]), join(&[i - 3, i - 2]));
    let before = [&one_zero, &two_one_zero, &two_one, &three_two_one, &three_two];
    if let Some(s) = before.iter().find_map(|seq| rules::special_case(seq)) {
        v = s;
    }
    if i + 1 < lower.len()
        && let Some(s) = rules::special_case(&join(&[i, i + 1]))
    {
        v = s;
    }
    if i + 2 < lower.len()
        && let Some(s) = rules::special_case(&join(&[i, i + 1, i + 2]))
    {
        v = s;
    }
    for n_gram in [&three_two_one, &three_two, &two_one] {
        if let Some(b) = rules::booster(n_gram) {
            v += b;
        }
    }
    v
}

/// "but" shifts weight to what follows: valences before the first "but" are halved, after it
/// multiplied by 1.5. As in the reference, each pass rescales the FIRST entry equal to the value
/// at the current position (Python's `list.index`), which differs when values repeat.
fn but_rule(lower: &[String], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else {
        return;
    };
    for k in 0..sentiments.len() {
        let v = sentiments[k];
        let si = sentiments.iter().position(|&x| x == v).unwrap_or(k);
        if si < bi {
            sentiments[si] = v * 0.5;
        } else if si > bi {
            sentiments[si] = v * 1.5;
        }
    }
}

/// Emphasis from "!" (up to 4) and "?" (2 or more) anywhere in the text.
fn punctuation_emphasis(text: &str) -> f64 {
    let exclamations = text.matches('!').count().min(rules::MAX_EXCLAMATIONS);
    let questions = text.matches('?').count();
    let q = match questions {
        0 | 1 => 0.0,
        2 | 3 => questions as f64 * rules::QUESTION_INCR,
        _ => rules::QUESTION_MAX,
    };
    exclamations as f64 * rules::EXCLAMATION_INCR + q
}

/// Combines the per-word valences into the four scores (unrounded).
fn score(sentiments: &[f64], text: &str) -> Polarity {
    if sentiments.is_empty() {
        return Polarity { neg: 0.0, neu: 0.0, pos: 0.0, compound: 0.0 };
    }
    let emphasis = punctuation_emphasis(text);
    let mut sum = sentiments.iter().fold(0.0, |a, &s| a + s);
    if sum > 0.0 {
        sum += emphasis;
    } else if sum < 0.0 {
        sum -= emphasis;
    }
    let compound = (sum / (sum * sum + rules::ALPHA).sqrt()).clamp(-1.0, 1.0);

    // Each non-neutral word counts as 1 + |valence| so that neutral words (counted 1) compare.
    let (mut pos_sum, mut neg_sum, mut neutral) = (0.0, 0.0, 0usize);
    for &s in sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        } else if s < 0.0 {
            neg_sum += s - 1.0;
        } else {
            neutral += 1;
        }
    }
    if pos_sum > neg_sum.abs() {
        pos_sum += emphasis;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= emphasis;
    }
    let total = pos_sum + neg_sum.abs() + neutral as f64;
    Polarity {
        neg: (neg_sum / total).abs(),
        neu: (neutral as f64 / total).abs(),
        pos: (pos_sum / total).abs(),
        compound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few real VADER ratings plus "superb" = 3.8 (exactly twice "good", to expose the "but" quirk).
    const LEXICON: &str = "good\t1.9\t0.9\t[2]\nsuperb\t3.8\t0.5\t[4]\nbad\t-2.5\t0.7\t[-2]\nno\t-1.2\t0.4\t[-1]\n\
                           shit\t-2.6\t0.9\t[-3]\nsmiling\t1.6\t0.6\t[2]\n:)\t2.0\t1.0\t[2]\n";
    const EMOJI: &str = "😊\tsmiling face with smiling eyes\n🇫🇷\tflag: France\n";

    /// (text, neg, neu, pos, compound) from the Python reference run with the same two lexicons.
    const REFERENCE: &[(&str, f64, f64, f64, f64)] = &[
        ("superb but good", 0.0, 0.171, 0.829, 0.5927),
        ("good but good good", 0.0, 0.094, 0.906, 0.8641),
        ("no good", 0.706, 0.294, 0.0, -0.3412),
        ("no, no good", 0.546, 0.454, 0.0, -0.3412),
        ("never so good", 0.0, 0.348, 0.652, 0.5777),
        ("not very good", 0.567, 0.433, 0.0, -0.3865),
        ("it is the shit", 0.0, 0.429, 0.571, 0.6124),
        ("kind of good", 0.0, 0.408, 0.592, 0.4404),
        ("it was kind of good", 0.0, 0.605, 0.395, 0.3832),
        ("fun😊day", 0.0, 0.435, 0.565, 0.6369),
        ("😊😊", 0.0, 0.366, 0.634, 0.8555),
        ("GOOD day", 0.0, 0.216, 0.784, 0.5622),
        ("good!!!!!", 0.0, 0.0, 1.0, 0.6209),
        ("bad???", 1.0, 0.0, 0.0, -0.6174),
        ("the least good", 0.546, 0.454, 0.0, -0.3412),
        ("at least good", 0.0, 0.408, 0.592, 0.4404),
        ("ok, good :)", 0.0, 0.145, 0.855, 0.7096),
        ("", 0.0, 0.0, 0.0, 0.0),
        ("nothing here", 0.0, 1.0, 0.0, 0.0),
    ];

    #[test]
    fn rules_match_reference_on_small_lexicon() {
        let v = Vader::from_lexicon_text(LEXICON, Some(EMOJI)).unwrap();
        for &(text, neg, neu, pos, compound) in REFERENCE {
            assert_eq!(v.polarity_scores(text), Polarity { neg, neu, pos, compound }, "{text:?}");
        }
    }

    #[test]
    fn but_rule_rescales_first_equal_value() {
        // [3.8, 0, 1.9]: 3.8 is halved to 1.9, then the later 1.9 finds that one first (list.index).
        let mut s = [3.8, 0.0, 1.9];
        but_rule(&["superb".into(), "but".into(), "good".into()], &mut s);
        assert_eq!(s, [0.95, 0.0, 1.9]);
    }

    #[test]
    fn emoji_descriptions_and_multi_char_keys() {
        let v = Vader::from_lexicon_text(LEXICON, Some(EMOJI)).unwrap();
        assert_eq!(
            v.describe_emojis("fun😊day 😊"),
            "fun smiling face with smiling eyesday smiling face with smiling eyes"
        );
        assert_eq!(v.describe_emojis("🇫🇷"), "🇫🇷"); // a two-character key never matches, as in Python
        let plain = Vader::from_lexicon_text(LEXICON, None).unwrap();
        assert_eq!(plain.polarity_scores("😊").compound, 0.0);
    }

    #[test]
    fn bad_lexicon_lines_are_named() {
        let err = Vader::from_lexicon_text("good\t1.9\nbad\n", None).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = Vader::from_lexicon_text("good\tvery\n", None).unwrap_err();
        assert!(format!("{err:#}").contains("line 1: field 2"), "{err:#}");
        assert!(Vader::from_lexicon_text("\n\n", None).is_err());
        let err = Vader::from_lexicon_text("good\t1\n", Some("😊\n")).unwrap_err();
        assert!(format!("{err:#}").contains("emoji lexicon line 1"), "{err:#}");
    }
}
