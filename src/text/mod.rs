//! Text: the tokenizer and the chat template, as one [`TextCodec`].
//!
//! Everything that turns text into token ids goes through here, so model loading, scoring and the data
//! pipeline agree on one tokenisation. Renderings match transformers' `apply_chat_template` and ids match
//! its `tokenize=True` (rendered text encoded with `add_special_tokens=False`).
//!
//! ```
//! use epa::text::{Message, TextCodec};
//! let codec = TextCodec::from_hf_folder(std::path::Path::new("tests/fixtures/tiny-llama"))?;
//! let prompt = [Message::new("user", "Describe the sea in one sentence.")];
//! let pair = codec.encode_pair(&prompt, "The sea is wide.")?;
//! // pair.prompt_ids ++ pair.response_ids is the rendered conversation; the response ends with the
//! // template's end-of-turn tokens.
//! assert!(pair.is_clean());
//! # anyhow::Ok(())
//! ```
//!
//! Without a chat template the prompt messages' contents are concatenated with no separator (a
//! standard-format string prompt is then used verbatim), the tokenizer's own special prefix (BOS, if its
//! post-processor adds one) goes first and EOS is appended after the response.

mod codec;
mod hf_config;
mod template;

pub use codec::{Boundary, EncodedPair, EncodedPrompt, TextCodec};
pub use template::{ChatTemplate, SpecialTokens};

use serde::{Deserialize, Serialize};

/// One chat turn, as in Hugging Face's `[{"role": ..., "content": ...}]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks: `system`, `user`, `assistant`, or any role the chat template knows.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl Message {
    /// A turn with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
    /// A `user` turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}
