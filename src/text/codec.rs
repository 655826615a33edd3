//! [`TextCodec`]: a Hugging Face tokenizer plus its chat template and special tokens.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use tokenizers::Tokenizer;

use super::Message;
use super::hf_config::HfTokenizerConfig;
use super::template::{ChatTemplate, SpecialTokens};

/// Tokeniser + chat template, the single source of token ids in epa.
pub struct TextCodec {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    special: SpecialTokens,
    /// Ids the tokenizer's post-processor puts before a single sequence (e.g. BOS), used only
    /// without a chat template.
    lead_ids: Vec<u32>,
    config: HfTokenizerConfig,
}

impl std::fmt::Debug for TextCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextCodec")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("special", &self.special)
            .field("has_template", &self.template.is_some())
            .finish()
    }
}

/// How the response ids were separated from the prompt ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Boundary {
    /// The prompt's ids are a prefix of the whole conversation's ids: the response is the id suffix.
    Clean,
    /// Tokenising the whole conversation merged tokens across the prompt/response boundary, so the
    /// prompt ids were not a prefix; the response is the *text* suffix tokenised on its own.
    TextSplit,
}

/// A prompt rendered (with the generation prompt) and tokenised once, reusable for many responses.
#[derive(Debug, Clone)]
pub struct EncodedPrompt {
    /// The prompt's messages (a plain-text prompt is one user message).
    pub messages: Vec<Message>,
    /// The rendered prompt text the ids were tokenised from.
    pub text: String,
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// Rendered with the chat template (responses then follow as assistant turns); otherwise the text
    /// is verbatim and responses are appended to it, ending with EOS.
    pub templated: bool,
}

/// One (prompt, response) pair: the model sees `prompt_ids ++ response_ids` and is scored on the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Token ids of the prompt, as rendered with the generation prompt.
    pub prompt_ids: Vec<u32>,
    /// Token ids of the response, the tokens that are scored.
    pub response_ids: Vec<u32>,
    /// How the response ids were split from the prompt ids.
    pub boundary: Boundary,
}

impl EncodedPair {
    /// Whether the response ids are exactly the tail of the whole conversation's ids ([`Boundary::Clean`]).
    pub fn is_clean(&self) -> bool {
        self.boundary == Boundary::Clean
    }
    /// `prompt_ids ++ response_ids`.
    pub fn input_ids(&self) -> Vec<u32> {
        [self.prompt_ids.as_slice(), self.response_ids.as_slice()].concat()
    }
}

fn tok_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!("{e}")
}

impl TextCodec {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` from a Hugging Face folder.
    pub fn from_hf_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&path).map_err(tok_err).with_context(|| format!("loading {}", path.display()))?;
        let config = HfTokenizerConfig::read(dir)?;
        Self::build(tokenizer, config).with_context(|| format!("tokenizer folder {}", dir.display()))
    }

    /// Builds a codec from parts (e.g. a tokenizer reconstructed from GGUF metadata).
    pub fn from_parts(
        tok: Tokenizer,
        chat_template: Option<String>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self> {
        let config = HfTokenizerConfig { bos, eos, chat_template, ..Default::default() };
        Self::build(tok, config)
    }

    fn build(tokenizer: Tokenizer, config: HfTokenizerConfig) -> Result<Self> {
        for (name, tok) in [("bos", &config.bos), ("eos", &config.eos), ("pad", &config.pad)] {
            if let Some(t) = tok
                && tokenizer.token_to_id(t).is_none()
            {
                bail!("{name} token {t:?} is not in the tokenizer's vocabulary");
            }
        }
        let template = config.chat_template.as_deref().map(ChatTemplate::new).transpose()?;
        let special = SpecialTokens {
            bos_token: config.bos.clone(),
            eos_token: config.eos.clone(),
            pad_token: config.pad.clone(),
            unk_token: config.unk.clone(),
        };
        let with = tokenizer.encode_fast("a", true).map_err(tok_err)?.get_ids().to_vec();
        let without = tokenizer.encode_fast("a", false).map_err(tok_err)?.get_ids().to_vec();
        let lead_ids = match with.windows(without.len().max(1)).position(|w| w == without.as_slice()) {
            Some(p) if !without.is_empty() => with[..p].to_vec(),
            _ => Vec::new(),
        };
        Ok(Self { tokenizer, template, special, lead_ids, config })
    }

    /// The largest id the tokenizer can produce (added tokens included), with its token.
    pub fn max_token_id(&self) -> Option<(String, u32)> {
        self.tokenizer.get_vocab(true).into_iter().max_by_key(|(_, id)| *id)
    }

    /// The underlying Hugging Face tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// The chat template, if the tokenizer has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }
    /// Whether a chat template is present (otherwise prompts are plain text).
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }
    /// The special tokens the chat template sees.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Tokenises `text`; `add_special_tokens` lets the post-processor add its tokens (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_fast(text, add_special_tokens).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Turns ids back into text, dropping special tokens when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    fn id_of(&self, tok: &Option<String>) -> Option<u32> {
        tok.as_deref().and_then(|t| self.tokenizer.token_to_id(t))
    }
    /// The id of the BOS token, if one is set and in the vocabulary.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.bos_token)
    }
    /// The id of the EOS token, if one is set and in the vocabulary.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.eos_token)
    }
    /// The pad token, or EOS when the tokenizer defines none (the usual convention; padded positions are
    /// masked anyway).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.id_of(&self.special.pad_token).or_else(|| self.eos_token_id())
    }

    /// Renders `messages` with the chat template. Without a template the contents are concatenated.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match &self.template {
            Some(t) => t.render(messages, add_generation_prompt, &self.special),
            None => Ok(messages.iter().map(|m| m.content.as_str()).collect()),
        }
    }

    /// Tokenises text produced by the chat template: no special tokens added (as transformers does), and
    /// a doubled leading BOS collapsed to one.
    fn encode_rendered(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, false)?;
        if let Some(bos) = self.bos_token_id()
            && ids.len() >= 2
            && ids[0] == bos
            && ids[1] == bos
        {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// Tokenises what [`TextCodec::render_chat`] produced: as template output when there is a
    /// template, else as plain text.
    fn encode_chat_text(&self, text: &str) -> Result<Vec<u32>> {
        match self.template {
            Some(_) => self.encode_rendered(text),
            None => self.encode_plain(text),
        }
    }

    /// Plain (template-less) text: the post-processor's leading ids (BOS), unless the text already has them.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text, false)?;
        if ids.starts_with(&self.lead_ids) {
            return Ok(ids);
        }
        Ok([self.lead_ids.as_slice(), &ids].concat())
    }

    /// Renders the prompt with the generation prompt and tokenises it.
    pub fn encode_prompt(&self, prompt: &[Message]) -> Result<EncodedPrompt> {
        let text = self.render_chat(prompt, true)?;
        let ids = self.encode_chat_text(&text)?;
        Ok(EncodedPrompt { messages: prompt.to_vec(), text, ids, templated: self.template.is_some() })
    }

    /// Tokenises a plain-text prompt verbatim, without the chat template (as TRL and transformers'
    /// `tokenizer(text)` do: the post-processor's BOS is added); responses follow the text directly
    /// and end with EOS.
    pub fn encode_text_prompt(&self, text: &str) -> Result<EncodedPrompt> {
        Ok(EncodedPrompt {
            messages: vec![Message::user(text)],
            text: text.to_owned(),
            ids: self.encode_plain(text)?,
            templated: false,
        })
    }

    /// Encodes `response` as the assistant's answer to an already encoded prompt.
    ///
    /// With a template: renders prompt + `assistant(response)` whole, tokenises it and takes the ids after
    /// the prompt's ids. If the prompt ids are not a prefix (a merge across the boundary) the text suffix is
    /// tokenised alone ([`Boundary::TextSplit`]); if even the *text* is not a prefix (a template that
    /// rewrites earlier turns once an answer follows) this is an error. Without a template: the response
    /// text follows the prompt text and EOS is appended.
    pub fn encode_response(&self, prompt: &EncodedPrompt, response: &str) -> Result<EncodedPair> {
        if response.is_empty() {
            bail!("empty response");
        }
        let (full_text, mut full_ids) = match self.template.as_ref().filter(|_| prompt.templated) {
            Some(_) => {
                let mut msgs = prompt.messages.clone();
                msgs.push(Message::assistant(response));
                let text = self.render_chat(&msgs, false)?;
                let ids = self.encode_rendered(&text)?;
                (text, ids)
            }
            None => {
                let text = format!("{}{}", prompt.text, response);
                let mut ids = self.encode_plain(&text)?;
                if let Some(eos) = self.eos_token_id()
                    && ids.last() != Some(&eos)
                {
                    ids.push(eos);
                }
                (text, ids)
            }
        };
        let pair = if full_ids.starts_with(&prompt.ids) {
            let response_ids = full_ids.split_off(prompt.ids.len());
            EncodedPair { prompt_ids: prompt.ids.clone(), response_ids, boundary: Boundary::Clean }
        } else if let Some(suffix) = full_text.strip_prefix(prompt.text.as_str()) {
            let mut response_ids = self.encode(suffix, false)?;
            if !prompt.templated
                && let Some(eos) = self.eos_token_id()
                && response_ids.last() != Some(&eos)
            {
                response_ids.push(eos);
            }
            EncodedPair { prompt_ids: prompt.ids.clone(), response_ids, boundary: Boundary::TextSplit }
        } else {
            bail!("the chat template renders the prompt differently once a response follows it");
        };
        if pair.response_ids.is_empty() {
            bail!("the response encodes to no tokens");
        }
        Ok(pair)
    }

    /// A whole conversation rendered with the chat template (no generation prompt) and tokenised, as a
    /// reward model reads it (transformers: `apply_chat_template(messages, tokenize=True)`). Without a
    /// template the contents are concatenated and the post-processor's leading ids added.
    pub fn encode_conversation(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_chat_text(&self.render_chat(messages, false)?)
    }

    /// Encodes one (prompt, response) pair; see [`TextCodec::encode_response`].
    pub fn encode_pair(&self, prompt: &[Message], response: &str) -> Result<EncodedPair> {
        let p = self.encode_prompt(prompt)?;
        self.encode_response(&p, response)
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja` and
    /// `special_tokens_map.json`, so transformers' `AutoTokenizer.from_pretrained(dir)` loads the folder.
    pub fn save_to_folder(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("tokenizer.json");
        self.tokenizer.save(&path, false).map_err(tok_err).with_context(|| format!("writing {}", path.display()))?;
        let mut cfg = self.config.clone();
        cfg.chat_template = self.template.as_ref().map(|t| t.source().to_owned());
        cfg.write(dir)
    }
}
