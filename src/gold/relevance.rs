//! Does a response talk about the prompt's topic? ρ(topic, response) ∈ [0, 1] is the fraction of
//! the topic's content words that occur in the response, after both sides are normalised the same
//! way (see [`normalize`]).
//!
//! ```
//! use epa::gold::relevance::Topic;
//! let topic = Topic::new("the city's bakeries", true);
//! assert_eq!(topic.words(), ["citi", "bakeri"]);
//! assert_eq!(topic.relevance("A bakery in every CITY!"), 1.0);
//! assert_eq!(topic.relevance("Cities never sleep."), 0.5);
//! assert_eq!(topic.relevance("The sea is calm."), 0.0);
//! ```

/// Function words dropped from a topic ("the sea" → "sea"), unless nothing else is left.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "with", "about", "from", "by", "my", "your",
    "his", "her", "its", "our", "their", "this", "that", "these", "those", "some", "any",
];

/// A prompt topic as the set of normalised content words a relevant response must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    words: Vec<String>,
    inflections: bool,
}

impl Topic {
    /// Splits `topic` into words (see [`words`]), drops stopwords (function words such as "the",
    /// "of", "about"; all of them kept if only stopwords remain), normalises each word and removes
    /// duplicates (first occurrence kept).
    pub fn new(topic: &str, inflections: bool) -> Self {
        let all: Vec<String> = words(topic).collect();
        let content: Vec<&String> = all.iter().filter(|w| !STOPWORDS.contains(&w.as_str())).collect();
        let chosen: Vec<&String> = if content.is_empty() { all.iter().collect() } else { content };
        let mut norm: Vec<String> = Vec::new();
        for w in chosen {
            let n = normalize(w, inflections);
            if !norm.contains(&n) {
                norm.push(n);
            }
        }
        Self { words: norm, inflections }
    }

    /// The normalised content words.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Fraction of the topic's words found in `response`; 1 when the topic has no words at all.
    pub fn relevance(&self, response: &str) -> f64 {
        if self.words.is_empty() {
            return 1.0;
        }
        let seen: std::collections::HashSet<String> =
            words(response).map(|w| normalize(&w, self.inflections)).collect();
        let hits = self.words.iter().filter(|w| seen.contains(*w)).count();
        hits as f64 / self.words.len() as f64
    }
}

/// Lowercased words of `text`: maximal runs of letters, digits and apostrophes (' or ’), with
/// apostrophes trimmed from both ends and a possessive "'s" removed ("dog's" → "dog").
/// Everything else (spaces, punctuation, hyphens, emoji) separates words.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    let apostrophe = |c: char| c == '\'' || c == '\u{2019}';
    text.split(move |c: char| !(c.is_alphanumeric() || apostrophe(c))).filter_map(move |run| {
        let w = run.trim_matches(apostrophe);
        let w = w.strip_suffix("'s").or_else(|| w.strip_suffix("\u{2019}s")).unwrap_or(w);
        (!w.is_empty()).then(|| w.to_lowercase())
    })
}

/// Maps inflected forms of a lowercase word to one key (when `inflections`; else the word itself).
/// Four steps, in order, each on the result of the previous one:
/// 1. plural: "-ies" → "-i" (len > 4); "-sses/-shes/-ches/-xes/-zes/-oes" → drop "es" (len > 4);
///    else a final "s" is dropped (len > 3) unless the word ends in "ss", "us" or "is";
/// 2. verb: "-ing" (len > 5) or "-ed" (len > 4) dropped when ≥ 3 characters remain, then a doubled
///    final consonant other than l/s/z is undoubled ("running" → "run");
/// 3. a final "y" after a consonant becomes "i" (len > 2), so "city"/"cities" meet at "citi";
/// 4. a final "e" is dropped (len > 3), so "bake"/"baking"/"baked" meet at "bak".
///
/// It is deliberately simple (no dictionary): what matters is that both the topic and the response
/// go through it, so regular inflections of the same word meet.
pub fn normalize(word: &str, inflections: bool) -> String {
    let mut w = word.to_string();
    if !inflections {
        return w;
    }
    let len = |s: &str| s.chars().count();
    // 1. plurals
    if len(&w) > 4 && ["ies", "sses", "shes", "ches", "xes", "zes", "oes"].iter().any(|s| w.ends_with(s)) {
        w.truncate(w.len() - 2); // "-ies" → "-i", the others lose "es"
    } else if len(&w) > 3 && w.ends_with('s') && !["ss", "us", "is"].iter().any(|s| w.ends_with(s)) {
        w.pop();
    }
    // 2. verb inflections
    let cut = if len(&w) > 5 && w.ends_with("ing") {
        3
    } else if len(&w) > 4 && w.ends_with("ed") {
        2
    } else {
        0
    };
    if cut > 0 && len(&w) - cut >= 3 {
        w.truncate(w.len() - cut);
        let b = w.as_bytes();
        let n = b.len();
        if n >= 2 && b[n - 1] == b[n - 2] && b[n - 1].is_ascii_alphabetic() && !b"aeiouylsz".contains(&b[n - 1]) {
            w.pop();
        }
    }
    // 3. y → i after a consonant
    let b = w.as_bytes();
    let n = b.len();
    if len(&w) > 2 && b[n - 1] == b'y' && b[n - 2].is_ascii_alphabetic() && !b"aeiou".contains(&b[n - 2]) {
        w.pop();
        w.push('i');
    }
    // 4. final e
    if len(&w) > 3 && w.ends_with('e') {
        w.pop();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        normalize(a, true) == normalize(b, true)
    }

    #[test]
    fn inflections_meet() {
        for (a, b) in [
            ("cat", "cats"),
            ("city", "cities"),
            ("berry", "berries"),
            ("box", "boxes"),
            ("church", "churches"),
            ("class", "classes"),
            ("potato", "potatoes"),
            ("horse", "horses"),
            ("bake", "baking"),
            ("bake", "baked"),
            ("run", "running"),
            ("stop", "stopped"),
            ("paint", "paintings"),
            ("cookie", "cookies"),
            ("day", "days"),
            ("tree", "trees"),
            ("shoe", "shoes"),
            ("toe", "toes"),
            ("fall", "falling"),
            ("bus", "buses"),
        ] {
            assert!(same(a, b), "{a} / {b}: {} vs {}", normalize(a, true), normalize(b, true));
        }
    }

    #[test]
    fn distinct_words_stay_apart() {
        for (a, b) in [("sea", "see"), ("cat", "car"), ("glass", "glas"), ("bus", "bu"), ("sing", "s"), ("red", "r")] {
            assert!(!same(a, b), "{a} / {b} both give {}", normalize(a, true));
        }
        assert_eq!(normalize("is", true), "is");
        assert_eq!(normalize("this", true), "this");
    }

    #[test]
    fn without_inflections_only_case_and_punctuation() {
        let t = Topic::new("Cats", false);
        assert_eq!(t.words(), ["cats"]);
        assert_eq!(t.relevance("I love CATS."), 1.0);
        assert_eq!(t.relevance("I love my cat."), 0.0);
    }

    #[test]
    fn word_splitting() {
        let w: Vec<String> = words("The dog's ball—it’s ICE-cream, 'quoted' 2024!").collect();
        assert_eq!(w, ["the", "dog", "ball", "it", "ice", "cream", "quoted", "2024"]);
        assert_eq!(words("  ... !!! ").count(), 0);
    }

    #[test]
    fn topic_words() {
        assert_eq!(Topic::new("the sea", true).words(), ["sea"]);
        assert_eq!(Topic::new("a rainy day in the city", true).words(), ["raini", "day", "citi"]);
        assert_eq!(Topic::new("cats and cat", true).words(), ["cat"]);
        assert_eq!(Topic::new("the", true).words(), ["the"]); // only stopwords: keep them
        assert!(Topic::new(" ?! ", true).words().is_empty());
        assert_eq!(Topic::new("", true).relevance("anything"), 1.0);
    }

    #[test]
    fn relevance_fraction() {
        let t = Topic::new("coffee and mountains", true);
        assert_eq!(t.relevance("Coffee in the MOUNTAINS, what a joy."), 1.0);
        assert_eq!(t.relevance("A mountain view."), 0.5);
        assert_eq!(t.relevance("coffeehouse"), 0.0); // whole words only
        assert_eq!(t.relevance(""), 0.0);
    }
}
