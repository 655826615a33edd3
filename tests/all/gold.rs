//! VADER parity with the Python reference (`vaderSentiment` 3.3.2) and the gold reward on the real
//! lexicon. The lexicon is fetched from PyPI on first use (then cached); see `epa::gold::lexicon`.

use epa::gold::{GoldReward, GoldRewardConfig, Polarity, Vader};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    neg: f64,
    neu: f64,
    pos: f64,
    compound: f64,
    /// The reference's scores before its final `round()`, as Python's `repr` (parsed exactly here;
    /// serde_json's default float parsing may be one ulp off).
    raw: RawScores,
}

#[derive(Deserialize)]
struct RawScores {
    neg: String,
    neu: String,
    pos: String,
    compound: String,
}

impl RawScores {
    fn get(&self) -> [f64; 4] {
        [&self.neg, &self.neu, &self.pos, &self.compound]
            .map(|s| s.parse().unwrap_or_else(|e| panic!("raw score {s:?}: {e}")))
    }
}

fn vader() -> Vader {
    Vader::load_default().unwrap_or_else(|e| {
        panic!(
            "cannot load the real VADER lexicon, which this test needs: {e:#}\n\
             It is `vaderSentiment/vader_lexicon.txt` and `vaderSentiment/emoji_utf8_lexicon.txt` from \
             the PyPI wheel vaderSentiment==3.3.2 (`python3 -m pip download vaderSentiment==3.3.2 --no-deps`)."
        )
    })
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vader/parity.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path} line {}: {e}", n + 1)))
        .collect()
}

fn diffs(a: &Polarity, neg: f64, neu: f64, pos: f64, compound: f64) -> [f64; 4] {
    [(a.neg - neg).abs(), (a.neu - neu).abs(), (a.pos - pos).abs(), (a.compound - compound).abs()]
}

#[test]
fn vader_matches_python_reference() {
    let vader = vader();
    assert_eq!(vader.lexicon_len(), 7506, "distinct tokens of vader_lexicon.txt (7 519 lines)");
    let cases = cases();
    assert!(cases.len() >= 300, "only {} parity sentences", cases.len());
    let (mut worst_rounded, mut worst_raw) = (0.0f64, 0.0f64);
    let mut failures = Vec::new();
    for c in &cases {
        let rounded = diffs(&vader.polarity_scores(&c.text), c.neg, c.neu, c.pos, c.compound);
        let [neg, neu, pos, compound] = c.raw.get();
        let raw = diffs(&vader.polarity_scores_raw(&c.text), neg, neu, pos, compound);
        let (r, w) = (rounded.iter().cloned().fold(0.0, f64::max), raw.iter().cloned().fold(0.0, f64::max));
        worst_rounded = worst_rounded.max(r);
        worst_raw = worst_raw.max(w);
        // The reference's own outputs to 1e-4; the unrounded ones must agree to float noise.
        if r > 1e-4 || w > 1e-12 {
            failures.push(format!(
                "{:?}: rust {:?} python neg {} neu {} pos {} compound {}",
                c.text,
                vader.polarity_scores(&c.text),
                c.neg,
                c.neu,
                c.pos,
                c.compound
            ));
        }
    }
    println!("{} sentences; max |rust − python| rounded {worst_rounded:e}, unrounded {worst_raw:e}", cases.len());
    assert!(failures.is_empty(), "{} of {} sentences differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn parity_fixture_covers_every_rule() {
    let cases = cases();
    let has = |f: &dyn Fn(&str) -> bool| cases.iter().any(|c| f(&c.text));
    assert!(has(&|t| t.contains(" but ")));
    assert!(has(&|t| t.contains("never so") || t.contains("never been so")));
    assert!(has(&|t| t.contains("least")));
    assert!(has(&|t| t.contains("kind of")));
    assert!(has(&|t| t.contains("the shit")));
    assert!(has(&|t| t.contains("!!!")));
    assert!(has(&|t| t.contains("??")));
    assert!(has(&|t| t.contains('😀')));
    assert!(has(&|t| t.contains("VERY")));
    // Not a fixture of zeros: most sentences carry sentiment, both signs.
    assert!(cases.iter().filter(|c| c.compound > 0.05).count() > 100);
    assert!(cases.iter().filter(|c| c.compound < -0.05).count() > 100);
}

#[test]
fn gold_reward_on_real_lexicon() {
    let gold = GoldReward::new(vader(), GoldRewardConfig::default()).unwrap();
    let on_pos = gold.score_parts("the sea", "The sea is wonderful and calm today!");
    let on_neg = gold.score_parts("the sea", "The sea is cold, grey and dangerous.");
    let off_pos = gold.score_parts("the sea", "Coffee is wonderful and warm today!");
    assert_eq!((on_pos.relevance, on_neg.relevance, off_pos.relevance), (1.0, 1.0, 0.0));
    assert!(on_pos.sentiment > 0.5 && on_neg.sentiment < -0.3 && off_pos.sentiment > 0.5);
    assert!(on_pos.reward > on_neg.reward && on_neg.reward > off_pos.reward);
    // Inflections: the topic "cities" is met by "city".
    assert_eq!(gold.relevance("busy cities", "A busy city is exciting."), 1.0);
}
