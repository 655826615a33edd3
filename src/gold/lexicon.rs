//! Where VADER's lexicons come from: the `vaderSentiment==3.3.2` wheel on PyPI (MIT), fetched at
//! run time by [`crate::artifacts`] (pip download, sha256 checks, cache); nothing of it is
//! committed here.
//!
//! `artifacts` knows the word lexicon ([`artifacts::VADER_LEXICON`]); the emoji lexicon beside it
//! in the same wheel is declared here, [`VADER_EMOJI_LEXICON`], and fetched the same way (a fetch
//! of either extracts both from the one download).

use crate::artifacts::{self, Artifact, VADER_LEXICON};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// `vaderSentiment/emoji_utf8_lexicon.txt` (MIT): emoji → description, used by VADER's rules.
/// Override: `EPA_VADER_EMOJI_LEXICON=/path/to/emoji_utf8_lexicon.txt` (sha256-checked).
pub const VADER_EMOJI_LEXICON: Artifact = Artifact {
    member: "vaderSentiment/emoji_utf8_lexicon.txt",
    member_sha256: "b8d54223ae1ce22a3e12c1f745316b71678c328eb5f5d3063a842f37cfbe2823",
    env_override: Some("EPA_VADER_EMOJI_LEXICON"),
    ..VADER_LEXICON
};

/// The two files [`super::Vader::load_default`] reads.
#[derive(Debug, Clone)]
pub struct LexiconPaths {
    /// `vader_lexicon.txt` (override: `EPA_VADER_LEXICON`).
    pub lexicon: PathBuf,
    /// `emoji_utf8_lexicon.txt` (override: `EPA_VADER_EMOJI_LEXICON`).
    pub emoji_lexicon: PathBuf,
}

/// Local, sha256-checked paths of both lexicons, fetched and cached on first use.
pub fn default_paths() -> Result<LexiconPaths> {
    let lexicon = artifacts::vader_lexicon().context("VADER word lexicon")?;
    let emoji_lexicon = artifacts::fetch(&VADER_EMOJI_LEXICON).context("VADER emoji lexicon")?;
    Ok(LexiconPaths { lexicon, emoji_lexicon })
}
