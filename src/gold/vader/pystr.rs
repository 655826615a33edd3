//! The few Python `str` semantics that `vaderSentiment.py` relies on, reproduced exactly:
//! `str.isspace` (for `split()` / `strip()`), `str.isupper`, `str.strip(string.punctuation)` and
//! `round(x, n)`. Rust's nearest equivalents differ in corner cases (e.g. `\x1c`–`\x1f` are
//! whitespace to Python, not to Rust; titlecase letters make `isupper` false), and parity with the
//! reference depends on those corners.

/// Python's `str.isspace` for one character: Unicode White_Space plus the four ASCII
/// information separators `\x1c`–`\x1f`, which Python also splits on.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()` (no argument): maximal runs of non-whitespace.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|t| !t.is_empty())
}

/// Python's `s.strip()` (no argument).
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Titlecase letters (general category Lt): Python's `isupper` is false when one is present.
fn is_titlecase(c: char) -> bool {
    matches!(c,
        '\u{1c5}' | '\u{1c8}' | '\u{1cb}' | '\u{1f2}'
        | '\u{1f88}'..='\u{1f8f}' | '\u{1f98}'..='\u{1f9f}' | '\u{1fa8}'..='\u{1faf}'
        | '\u{1fbc}' | '\u{1fcc}' | '\u{1ffc}')
}

/// Python's `s.isupper()`: at least one uppercase character and no lowercase or titlecase one.
pub fn is_upper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// Python's `s.strip(string.punctuation)`: ASCII punctuation removed from both ends.
pub fn strip_ascii_punctuation(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_punctuation())
}

/// Python's `round(x, digits)`: the exact binary value rounded to `digits` decimals, ties to even.
/// Rust's `{:.N}` formatting rounds the exact value the same way, so we go through it.
pub fn round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_matches_python() {
        assert_eq!(split_whitespace(" a\u{1f}b\u{a0} c\t").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(strip("\u{1c} x \u{3000}"), "x");
    }

    #[test]
    fn isupper_matches_python() {
        assert!(is_upper("VERY"));
        assert!(is_upper("GOOD!!"));
        assert!(is_upper("I'M"));
        assert!(!is_upper(":)"));
        assert!(!is_upper("Good"));
        assert!(!is_upper("\u{1c5}X")); // 'ǅ' is titlecase
        assert!(is_upper("ÉTÉ"));
    }

    #[test]
    fn punctuation_strip() {
        assert_eq!(strip_ascii_punctuation("...great!!!"), "great");
        assert_eq!(strip_ascii_punctuation(":)"), "");
        assert_eq!(strip_ascii_punctuation("“great”"), "“great”");
    }

    #[test]
    fn round_half_even_on_exact_values() {
        assert_eq!(round(0.0625, 3), 0.062); // exact tie: ties to even
        assert_eq!(round(0.0635, 3), 0.064); // 0.0635 is stored just above the tie
        assert_eq!(round(0.12345678, 4), 0.1235);
        assert_eq!(round(-0.99995, 4), -1.0); // stored as -0.999950000000000006..., as Python gives
    }
}
