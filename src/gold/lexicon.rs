//! Where VADER's lexicons come from: the `vaderSentiment==3.3.2` wheel on PyPI (MIT), fetched at
//! run time, checked by sha256 and cached; nothing of it is committed here.

use anyhow::Result;
use std::path::PathBuf;

/// The two files [`super::Vader::load_default`] reads.
#[derive(Debug, Clone)]
pub struct LexiconPaths {
    /// `vader_lexicon.txt` (sha256 1ec9c6e9…).
    pub lexicon: PathBuf,
    /// `emoji_utf8_lexicon.txt` (sha256 b8d54223…).
    pub emoji_lexicon: PathBuf,
}

/// sha256 of `vaderSentiment/vader_lexicon.txt` in the 3.3.2 wheel.
pub const LEXICON_SHA256: &str = "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5";
/// sha256 of `vaderSentiment/emoji_utf8_lexicon.txt` in the 3.3.2 wheel.
pub const EMOJI_LEXICON_SHA256: &str =
    "b8d54223ae1ce22a3e12c1f745316b71678c328eb5f5d3063a842f37cfbe2823";

/// Local, sha256-checked paths of both lexicons, fetched on first use.
pub fn default_paths() -> Result<LexiconPaths> {
    fetch::paths()
}

/// Interim source until `crate::artifacts` (branch `gguf`) lands: an existing cached copy only.
mod fetch {
    use super::*;
    use anyhow::{Context, bail};
    use sha2::{Digest, Sha256};

    pub fn paths() -> Result<LexiconPaths> {
        let dir = cache_root()?
            .join("vaderSentiment-3.3.2")
            .join("vaderSentiment");
        let lexicon = checked(dir.join("vader_lexicon.txt"), LEXICON_SHA256)?;
        let emoji_lexicon = checked(dir.join("emoji_utf8_lexicon.txt"), EMOJI_LEXICON_SHA256)?;
        Ok(LexiconPaths {
            lexicon,
            emoji_lexicon,
        })
    }

    fn cache_root() -> Result<PathBuf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("EPA_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("epa")))
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("epa")))
            .context("cannot choose a cache folder: set EPA_CACHE_DIR")
    }

    fn checked(path: PathBuf, sha256: &str) -> Result<PathBuf> {
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "VADER lexicon missing: run `python3 -m pip download vaderSentiment==3.3.2 --no-deps -d DIR`, \
                 unzip the wheel and copy `vaderSentiment/{}` to {}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                path.display()
            )
        })?;
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != sha256 {
            bail!("{} has sha256 {got}, expected {sha256}", path.display());
        }
        Ok(path)
    }
}
