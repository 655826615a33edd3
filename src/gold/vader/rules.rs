//! VADER's hand-written word lists and constants (`vaderSentiment.py` 3.3.2), as data.
//!
//! The numbers are the empirically derived intensity shifts of Hutto & Gilbert (ICWSM 2014).

/// Mean intensity increase from a booster word ("very good").
pub const B_INCR: f64 = 0.293;
/// Mean intensity decrease from a dampener word ("kind of good").
pub const B_DECR: f64 = -0.293;
/// Mean intensity increase from writing a word in ALL CAPS while other words are not.
pub const C_INCR: f64 = 0.733;
/// Factor applied to a negated word's valence.
pub const N_SCALAR: f64 = -0.74;
/// Intensity added per exclamation mark (at most [`MAX_EXCLAMATIONS`] count).
pub const EXCLAMATION_INCR: f64 = 0.292;
/// Exclamation marks that count (each adds [`EXCLAMATION_INCR`]); more add nothing.
pub const MAX_EXCLAMATIONS: usize = 4;
/// Intensity added per question mark when there are 2 or 3 of them; 4 or more add [`QUESTION_MAX`].
pub const QUESTION_INCR: f64 = 0.18;
/// Intensity added by 4 or more question marks (instead of [`QUESTION_INCR`] each).
pub const QUESTION_MAX: f64 = 0.96;
/// `compound = s / sqrt(s² + ALPHA)`: approximates the largest expected raw sum.
pub const ALPHA: f64 = 15.0;

/// Words that negate the sentiment of a following word (within three words).
const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

/// Degree adverbs: boosters (+[`B_INCR`]) then dampeners ([`B_DECR`]). Some are two words; those
/// only ever match through the n-gram check after a sentiment word's three predecessors.
const BOOSTERS: &[&str] = &[
    "absolutely",
    "amazingly",
    "awfully",
    "completely",
    "considerable",
    "considerably",
    "decidedly",
    "deeply",
    "effing",
    "enormous",
    "enormously",
    "entirely",
    "especially",
    "exceptional",
    "exceptionally",
    "extreme",
    "extremely",
    "fabulously",
    "flipping",
    "flippin",
    "frackin",
    "fracking",
    "fricking",
    "frickin",
    "frigging",
    "friggin",
    "fully",
    "fuckin",
    "fucking",
    "fuggin",
    "fugging",
    "greatly",
    "hella",
    "highly",
    "hugely",
    "incredible",
    "incredibly",
    "intensely",
    "major",
    "majorly",
    "more",
    "most",
    "particularly",
    "purely",
    "quite",
    "really",
    "remarkably",
    "so",
    "substantially",
    "thoroughly",
    "total",
    "totally",
    "tremendous",
    "tremendously",
    "uber",
    "unbelievably",
    "unusually",
    "utter",
    "utterly",
    "very",
];
const DAMPENERS: &[&str] = &[
    "almost",
    "barely",
    "hardly",
    "just enough",
    "kind of",
    "kinda",
    "kindof",
    "kind-of",
    "less",
    "little",
    "marginal",
    "marginally",
    "occasional",
    "occasionally",
    "partly",
    "scarce",
    "scarcely",
    "slight",
    "slightly",
    "somewhat",
    "sort of",
    "sorta",
    "sortof",
    "sort-of",
];

/// Idioms and phrases containing lexicon words, with the valence that replaces the word's own.
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

/// `negated([word])` of the reference for one lowercased word: a negation word, or any "n't".
pub fn is_negation(lower: &str) -> bool {
    NEGATE.contains(&lower) || lower.contains("n't")
}

/// The booster/dampener shift of a lowercased word or phrase, if it is one.
pub fn booster(lower: &str) -> Option<f64> {
    if BOOSTERS.contains(&lower) {
        Some(B_INCR)
    } else if DAMPENERS.contains(&lower) {
        Some(B_DECR)
    } else {
        None
    }
}

/// The valence of a special-case idiom (a lowercased, space-joined phrase), if it is one.
pub fn special_case(phrase: &str) -> Option<f64> {
    SPECIAL_CASES.iter().find(|(p, _)| *p == phrase).map(|&(_, v)| v)
}
