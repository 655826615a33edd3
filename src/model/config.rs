//! `ModelConfig`: the shape of a decoder-only transformer, read from a Hugging Face `config.json`
//! (Llama, Mistral, Qwen2, SmolLM2) or filled in from GGUF metadata.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Architectures this crate implements. All share one decoder: RMSNorm, RoPE (rotate-half),
/// grouped-query attention, SwiGLU MLP; Qwen2 adds q/k/v biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama and SmolLM2 (`model_type = "llama"`; GGUF `general.architecture = "llama"`).
    Llama,
    /// Mistral (`model_type = "mistral"`), run on the same decoder; Hugging Face folders only (GGUF loads
    /// llama and qwen2).
    Mistral,
    /// Qwen2 / Qwen2.5 (`model_type = "qwen2"`): biases on the q/k/v projections, none on o.
    Qwen2,
}

impl Arch {
    /// The `architectures[0]` value transformers writes for this family.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
    /// The `model_type` value of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        }
    }
    /// The family of a config.json `model_type` (`"llama"`, `"mistral"`, `"qwen2"`); `None` for any other.
    pub fn from_model_type(s: &str) -> Option<Arch> {
        match s {
            "llama" => Some(Arch::Llama),
            "mistral" => Some(Arch::Mistral),
            "qwen2" => Some(Arch::Qwen2),
            _ => None,
        }
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family (HF `model_type`; GGUF `general.architecture`).
    pub arch: Arch,
    /// Number of token ids `V`: rows of the embedding and of `lm_head` (HF `vocab_size`; GGUF: the
    /// rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Residual-stream width `H` (HF `hidden_size`; GGUF `{arch}.embedding_length`).
    pub hidden_size: usize,
    /// Inner width of the SwiGLU MLP, the output size of `gate_proj`/`up_proj` (HF `intermediate_size`;
    /// GGUF `{arch}.feed_forward_length`).
    pub intermediate_size: usize,
    /// Number of decoder layers (HF `num_hidden_layers`; GGUF `{arch}.block_count`).
    pub num_hidden_layers: usize,
    /// Query heads per layer (HF `num_attention_heads`; GGUF `{arch}.attention.head_count`).
    pub num_attention_heads: usize,
    /// Key/value heads per layer, a divisor of the query heads (grouped-query attention; HF
    /// `num_key_value_heads`, defaulting to `num_attention_heads`; GGUF `{arch}.attention.head_count_kv`).
    pub num_key_value_heads: usize,
    /// Width of one attention head, even for RoPE (HF `head_dim`, else `hidden_size / num_attention_heads`;
    /// GGUF `{arch}.attention.key_length`).
    pub head_dim: usize,
    /// Epsilon added to the mean square in every RMSNorm (HF `rms_norm_eps`, default 1e-6; GGUF
    /// `{arch}.attention.layer_norm_rms_epsilon`, default 1e-5).
    pub rms_norm_eps: f64,
    /// RoPE base θ (HF `rope_parameters.rope_theta` or `rope_theta`, default 10000; GGUF
    /// `{arch}.rope.freq_base`).
    pub rope_theta: f64,
    /// Longest sequence the model takes, in tokens; longer inputs are refused (HF
    /// `max_position_embeddings`; GGUF `{arch}.context_length`; default 4096 when absent).
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding, so there is no `lm_head` weight (HF
    /// `tie_word_embeddings`; GGUF: no `output.weight` tensor).
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (Qwen2: true; Llama: `attention_bias`).
    pub attention_bias: bool,
    /// Bias on the o projection (Llama `attention_bias` puts one there too).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Beginning-of-sequence token id (HF `bos_token_id`; GGUF `tokenizer.ggml.bos_token_id`).
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id (HF `eos_token_id`, the first one when it is a list; GGUF
    /// `tokenizer.ggml.eos_token_id`).
    pub eos_token_id: Option<u32>,
    /// Padding token id (HF `pad_token_id`; GGUF `tokenizer.ggml.padding_token_id`); when absent,
    /// [`LoadedModel::pad_id`](crate::model::load::LoadedModel::pad_id) falls back to the tokenizer's or eos.
    pub pad_token_id: Option<u32>,
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json`. Errors name the file and the field.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model config {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_hf_json(&value).with_context(|| format!("in model config {}", path.display()))
    }

    /// Parses the JSON value of a Hugging Face `config.json`.
    pub fn from_hf_json(v: &serde_json::Value) -> Result<Self> {
        let obj = v.as_object().context("config.json must be a JSON object")?;
        let model_type =
            obj.get("model_type").and_then(|x| x.as_str()).context("field `model_type` is missing or not a string")?;
        let arch = match Arch::from_model_type(model_type) {
            Some(a) => a,
            None => bail!("unsupported architecture: model_type = {model_type:?} (supported: llama, mistral, qwen2)"),
        };
        let req_usize = |k: &str| -> Result<usize> {
            obj.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .with_context(|| format!("field `{k}` is missing or not a non-negative integer"))
        };
        let opt_f64 = |k: &str| -> Result<Option<f64>> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).with_context(|| format!("field `{k}` is not a number")),
            }
        };
        let opt_bool = |k: &str, default: bool| -> Result<bool> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x.as_bool().with_context(|| format!("field `{k}` is not a boolean")),
            }
        };
        let opt_id = |k: &str| -> Option<u32> {
            match obj.get(k) {
                Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32),
                // Some configs list several eos ids: the first is the one generation stops on.
                Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
                _ => None,
            }
        };

        let hidden_size = req_usize("hidden_size")?;
        let num_attention_heads = req_usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            bail!("field `num_attention_heads` must be > 0");
        }
        let num_key_value_heads = match obj.get("num_key_value_heads") {
            None | Some(serde_json::Value::Null) => num_attention_heads,
            Some(_) => req_usize("num_key_value_heads")?,
        };
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "field `num_key_value_heads` = {num_key_value_heads} must divide `num_attention_heads` = {num_attention_heads}"
            );
        }
        let head_dim = match obj.get("head_dim") {
            None | Some(serde_json::Value::Null) => {
                if hidden_size % num_attention_heads != 0 {
                    bail!("`hidden_size` is not a multiple of `num_attention_heads` and `head_dim` is absent");
                }
                hidden_size / num_attention_heads
            }
            Some(_) => req_usize("head_dim")?,
        };
        // transformers >= 5 writes rope_theta inside rope_parameters; older files at top level.
        let rope_theta = match obj.get("rope_parameters") {
            Some(serde_json::Value::Object(rp)) => {
                if let Some(t) = rp.get("rope_type").and_then(|x| x.as_str())
                    && t != "default"
                {
                    bail!("field `rope_parameters.rope_type` = {t:?} is not supported (only \"default\")");
                }
                rp.get("rope_theta").and_then(|x| x.as_f64())
            }
            _ => None,
        };
        let rope_theta = match rope_theta {
            Some(t) => t,
            None => opt_f64("rope_theta")?.unwrap_or(10000.0),
        };
        if let Some(serde_json::Value::Object(rs)) = obj.get("rope_scaling") {
            let t = rs.get("rope_type").or(rs.get("type")).and_then(|x| x.as_str()).unwrap_or("?");
            if t != "default" {
                bail!("field `rope_scaling` with rope_type {t:?} is not supported");
            }
        }
        if let Some(act) = obj.get("hidden_act").and_then(|x| x.as_str())
            && act != "silu"
        {
            bail!("field `hidden_act` = {act:?} is not supported (only \"silu\")");
        }
        let (attention_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            _ => {
                let b = opt_bool("attention_bias", false)?;
                (b, b)
            }
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: req_usize("vocab_size")?,
            hidden_size,
            intermediate_size: req_usize("intermediate_size")?,
            num_hidden_layers: req_usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: obj
                .get("max_position_embeddings")
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .unwrap_or(4096),
            tie_word_embeddings: opt_bool("tie_word_embeddings", false)?,
            attention_bias,
            o_bias,
            mlp_bias: opt_bool("mlp_bias", false)?,
            bos_token_id: opt_id("bos_token_id"),
            eos_token_id: opt_id("eos_token_id"),
            pad_token_id: opt_id("pad_token_id"),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the sizes are positive, `head_dim` is even (RoPE rotates pairs of halves) and
    /// `rope_theta` > 0; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                bail!("field `{name}` must be > 0");
            }
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("field `head_dim` = {} must be even for RoPE", self.head_dim);
        }
        // NaN fails this too.
        if self.rope_theta.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            bail!("rope theta must be > 0");
        }
        Ok(())
    }

    /// The config.json transformers writes for this shape (transformers-5 style, with
    /// `rope_theta` both at top level and in `rope_parameters` so old and new readers agree).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": "float32",
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().unwrap();
        if self.arch != Arch::Qwen2 {
            o.insert("attention_bias".into(), self.attention_bias.into());
            o.insert("mlp_bias".into(), self.mlp_bias.into());
        }
        for (k, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                o.insert(k.into(), id.into());
            }
        }
        v
    }

    /// Number of trainable parameters (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if self.attention_bias { q + 2 * kv } else { 0 }
            + if self.o_bias { h } else { 0 };
        let mlp = 3 * h * self.intermediate_size + if self.mlp_bias { 2 * self.intermediate_size + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        let emb = self.vocab_size * h;
        emb + self.num_hidden_layers * layer + h + if self.tie_word_embeddings { 0 } else { emb }
    }

    /// SmolLM2-135M's shape (for benchmarks and tests that need a realistic size, random weights).
    pub fn smollm2_135m() -> Self {
        ModelConfig {
            arch: Arch::Llama,
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: false,
            o_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: Some(2),
        }
    }

    /// Qwen2.5-0.5B's shape (`Qwen/Qwen2.5-0.5B-Instruct`'s config.json): 494M parameters, tied
    /// embeddings, q/k/v biases. The benchmark shape of the GPU check.
    pub fn qwen2_5_0_5b() -> Self {
        ModelConfig {
            arch: Arch::Qwen2,
            vocab_size: 151936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            head_dim: 64,
            rms_norm_eps: 1e-6,
            rope_theta: 1000000.0,
            max_position_embeddings: 32768,
            tie_word_embeddings: true,
            attention_bias: true,
            o_bias: false,
            mlp_bias: false,
            bos_token_id: None,
            eos_token_id: Some(151645),
            pad_token_id: Some(151643),
        }
    }
}
