//! Hugging Face sequence-classification reward models (`LlamaForSequenceClassification`,
//! `Qwen2ForSequenceClassification`, `MistralForSequenceClassification` with `num_labels = 1`): the
//! decoder body and a `score` head `[1, hidden]` without bias, no `lm_head`.
//!
//! # Formula
//!
//! For a conversation rendered with the reward model's own chat template and tokenised, `x₁…x_T`:
//!
//! ```text
//! r(x) = w_score · h_t*        t* = the last position whose id is not the pad id (as transformers)
//! ```
//!
//! where `h` are the final (normed) hidden states. transformers computes the head at every position and
//! reads `t* = max{t : x_t ≠ pad_token_id}` (the last position when the config has no pad id); here
//! the batch is right-padded, so only the real tokens of a row are searched, which is the same position.

use anyhow::{Context, Result, bail};
use burn::nn::Linear;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::layout::Layout;
use super::llama::{CausalLm, ForwardInputs};
use super::load::{check_vocab, download_from_hub, looks_like_hub_id};
use super::rope::Rope;
use super::weights::{WeightMap, build_reward_model};
use crate::text::{Message, TextCodec};

/// A reward model ready to score conversations.
pub struct RewardModel {
    /// The decoder body (its `lm_head` slot is empty and never used: only [`CausalLm::hidden`] runs).
    pub decoder: CausalLm,
    /// `[hidden] → [1]`, no bias.
    pub score: Linear,
    /// The decoder's shape (from config.json).
    pub config: ModelConfig,
    /// RoPE tables for the decoder.
    pub rope: Rope,
    /// The reward model's own tokenizer and chat template, used to render the conversations it scores.
    pub codec: TextCodec,
    /// `pad_token_id` of config.json (what transformers looks for); `None`: the last token is read.
    pub pad_id: Option<u32>,
    /// The folder it was loaded from, for reports and errors.
    pub source: PathBuf,
}

impl RewardModel {
    /// Loads a reward model from a Hugging Face folder or a hub id (`org/name`, downloaded through the
    /// hub client). Causal LMs, GGUF files and folders without a tokenizer are refused with the reason.
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::load_folder(path, device);
        }
        if path.is_file() {
            bail!(
                "{}: a reward model is a Hugging Face folder (config.json, model.safetensors, tokenizer.json)",
                path.display()
            );
        }
        if looks_like_hub_id(spec) {
            let dir = download_from_hub(spec)?;
            return Self::load_folder(&dir, device);
        }
        bail!("reward model `{spec}`: no such folder (and not a hub id of the form org/name)")
    }

    /// Loads a Hugging Face `*ForSequenceClassification` folder.
    pub fn load_folder(dir: &Path, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
        let mut weights = WeightMap::from_hf_folder(dir)?;
        let (body, score) = build_reward_model(&config, &mut weights, device)
            .with_context(|| format!("loading a reward model from {}", dir.display()))?;
        if !dir.join("tokenizer.json").exists() {
            bail!(
                "{}: no tokenizer.json beside the reward model (it must read text as it was trained to)",
                dir.display()
            );
        }
        let codec = TextCodec::from_hf_folder(dir)?;
        check_vocab(&codec, config.vocab_size, dir)?;
        Ok(RewardModel {
            decoder: body.with_lm_head(None),
            score,
            rope: Rope::new(config.head_dim, config.rope_theta),
            pad_id: config.pad_token_id,
            config,
            codec,
            source: dir.to_path_buf(),
        })
    }

    /// The ids the reward model reads for a conversation: rendered with its own chat template.
    pub fn encode(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.codec.encode_conversation(messages)
    }

    /// The position transformers reads in a row of real tokens: the last one that is not the pad id
    /// (0 when every token is the pad id, as transformers' argmax gives), or the last one without a pad id.
    pub fn read_position(&self, ids: &[u32]) -> usize {
        match self.pad_id {
            Some(pad) => ids.iter().rposition(|&t| t != pad).unwrap_or(0),
            None => ids.len().saturating_sub(1),
        }
    }

    /// Rewards of token sequences, one forward pass for the whole batch (right-padded). Empty
    /// sequences, ids outside the vocabulary and sequences past `max_position_embeddings` are errors.
    pub fn score_batch(&self, seqs: &[Vec<u32>]) -> Result<Vec<f32>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.config.max_position_embeddings;
        for (i, s) in seqs.iter().enumerate() {
            if s.is_empty() {
                bail!("sequence {i} is empty: a reward model needs at least one token");
            }
            if max > 0 && s.len() > max {
                bail!(
                    "sequence {i} is {} tokens, more than {} handles (max_position_embeddings = {max})",
                    s.len(),
                    self.source.display()
                );
            }
            if let Some(bad) = s.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                bail!(
                    "sequence {i} holds id {bad}, outside the reward model's vocabulary ({})",
                    self.config.vocab_size
                );
            }
        }
        let device = self.decoder.device();
        let rows: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let layout = Layout::padded(&rows, self.pad_id.unwrap_or(0));
        let inputs = ForwardInputs::from_layout(&layout, &self.rope, &device);
        let hidden = self.decoder.hidden(&inputs, None); // [B, T, H]
        let [b, t, h] = hidden.dims();
        let at: Vec<i64> = seqs.iter().enumerate().map(|(i, s)| (i * t + self.read_position(s)) as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(at, [b]), &device);
        let last = hidden.reshape([b * t, h]).select(0, idx).cast(FloatDType::F32); // [B, H]
        Ok(super::host_f32(self.score.forward(last)))
    }

    /// Rewards of conversations (each rendered with [`RewardModel::encode`]), `batch` per forward pass.
    pub fn score_conversations(&self, conversations: &[Vec<Message>], batch: usize) -> Result<Vec<f32>> {
        let ids = conversations.iter().map(|c| self.encode(c)).collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(batch.max(1)) {
            out.extend(self.score_batch(chunk)?);
        }
        Ok(out)
    }
}
