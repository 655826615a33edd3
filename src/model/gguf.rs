//! GGUF models (llama.cpp's format): weights dequantised to f32 in Hugging Face names and layout,
//! the shape as a [`ModelConfig`], and the tokenizer rebuilt from the metadata.
//!
//! ```no_run
//! let path = epa::artifacts::smollm2_gguf()?;           // fetched and sha256-checked
//! let m = epa::model::gguf::load_gguf(&path)?;
//! assert_eq!(m.config.num_hidden_layers, 30);
//! let (name, shape, values) = &m.tensors[0];             // e.g. "model.embed_tokens.weight", [49152, 576]
//! let ids = m.tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n", false).unwrap();
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Conventions of what [`load_gguf`] returns:
//! - names: llama.cpp → Hugging Face ([`names::hf_name`]): `token_embd.weight` →
//!   `model.embed_tokens.weight`, `blk.N.attn_q.weight` → `model.layers.N.self_attn.q_proj.weight`, …,
//!   `output.weight` → `lm_head.weight` (absent when the embeddings are tied);
//! - shapes: row-major, Hugging Face order (`[out, in]` for linear weights): GGUF's `ne` reversed,
//!   the data needs no transposition;
//! - `llama` q/k projections: llama.cpp's RoPE row permutation is inverted (see [`names`]), so the
//!   weights are exactly transformers' and a rotate-half RoPE reproduces llama.cpp.

pub mod names;
pub mod quant;
pub mod reader;
pub mod tokenizer;

pub use quant::GgmlType;
pub use reader::{GgufFile, GgufTensorInfo, GgufValue};

use crate::model::config::{Arch, ModelConfig};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// A GGUF model loaded into f32 with Hugging Face names.
pub struct GgufModel {
    /// The model shape from the `{arch}.*` metadata ([`config_from_gguf`]).
    pub config: ModelConfig,
    /// (Hugging Face name, Hugging Face shape, row-major f32 values), in file order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Byte-level BPE tokenizer rebuilt from the `tokenizer.ggml.*` metadata.
    pub tokenizer: tokenizers::Tokenizer,
    /// `tokenizer.chat_template`, or plain ChatML when the file has none.
    pub chat_template: Option<String>,
    /// Text of the token `tokenizer.ggml.bos_token_id` points at, if the file sets one.
    pub bos_token: Option<String>,
    /// Text of the token `tokenizer.ggml.eos_token_id` points at, if the file sets one.
    pub eos_token: Option<String>,
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open GGUF file {}", path.display()))?;
    // SAFETY: the map is read-only and private to this process; a concurrent writer truncating the
    // file is outside what any loader can guard against.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot memory-map {}", path.display()))
}

/// Reads the metadata and tensor infos of a GGUF file (no tensor data is decoded).
pub fn read_gguf_metadata(path: &Path) -> Result<GgufFile> {
    let map = map_file(path)?;
    GgufFile::parse(path, &map)
}

/// A memory-mapped GGUF file, for reading single tensors as stored (GGUF names, no permutation).
pub struct GgufData {
    /// The parsed header, metadata and tensor infos.
    pub file: GgufFile,
    map: memmap2::Mmap,
}

impl GgufData {
    /// Memory-maps `path` and parses its metadata and tensor infos; tensors are decoded on demand.
    pub fn open(path: &Path) -> Result<GgufData> {
        let map = map_file(path)?;
        let file = GgufFile::parse(path, &map)?;
        Ok(GgufData { file, map })
    }

    /// Tensor `name` dequantised to f32: (row-major shape, i.e. GGUF dims reversed; values).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self
            .file
            .tensor(name)
            .with_context(|| format!("{}: no tensor named `{name}`", self.file.path.display()))?;
        Ok((t.shape(), decode(&self.file, &self.map, t)?))
    }
}

/// Dequantises one tensor to f32 (GGUF element order). Errors name the file, tensor and type.
pub fn decode(f: &GgufFile, bytes: &[u8], t: &GgufTensorInfo) -> Result<Vec<f32>> {
    let p = f.path.display();
    if !t.ty.can_dequantize() {
        bail!(
            "{p}: tensor `{}` has type {}, which is not supported (supported: {})",
            t.name,
            t.ty.name(),
            quant::SUPPORTED_TYPES
        );
    }
    let (block, _) = t.ty.block_layout().expect("supported types have a layout");
    if t.dims.first().is_some_and(|&d| d % block as u64 != 0) {
        bail!(
            "{p}: tensor `{}` of type {} has {} columns, not a multiple of its block size {block}",
            t.name,
            t.ty.name(),
            t.dims[0]
        );
    }
    let data = f.tensor_bytes(t, bytes)?;
    let n = usize::try_from(t.n_elements()).with_context(|| format!("{p}: tensor `{}` is too large", t.name))?;
    quant::dequantize(t.ty, data, n).with_context(|| format!("{p}: tensor `{}`", t.name))
}

/// Loads a GGUF model: config, f32 tensors in Hugging Face names/layout, tokenizer, chat template.
pub fn load_gguf(path: &Path) -> Result<GgufModel> {
    let map = map_file(path)?;
    let file = GgufFile::parse(path, &map)?;
    let config = config_from_gguf(&file)?;
    let tensors = load_tensors(&file, &map, &config)?;
    let tokenizer = tokenizer::build_tokenizer(&file)?;
    let chat_template = Some(match file.get("tokenizer.chat_template") {
        Some(v) => v
            .as_str()
            .with_context(|| format!("{}: `tokenizer.chat_template` is not a string", path.display()))?
            .to_string(),
        None => tokenizer::CHATML_TEMPLATE.to_string(),
    });
    Ok(GgufModel {
        bos_token: tokenizer::special_token(&file, "tokenizer.ggml.bos_token_id"),
        eos_token: tokenizer::special_token(&file, "tokenizer.ggml.eos_token_id"),
        config,
        tensors,
        tokenizer,
        chat_template,
    })
}

/// The model shape from the `{arch}.*` metadata (`llama` and `qwen2`).
pub fn config_from_gguf(f: &GgufFile) -> Result<ModelConfig> {
    let p = f.path.display();
    let arch_name = f.get_str("general.architecture")?;
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => bail!(
            "{p}: GGUF architecture `general.architecture` = {other:?} is not supported (supported: llama, qwen2)"
        ),
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let usize_of = |k: &str| -> Result<usize> { Ok(f.get_u64(&key(k))? as usize) };

    let hidden_size = usize_of("embedding_length")?;
    let num_attention_heads = usize_of("attention.head_count")?;
    if num_attention_heads == 0 {
        bail!("{p}: `{}` must be > 0", key("attention.head_count"));
    }
    let num_key_value_heads = match f.get(&key("attention.head_count_kv")) {
        None => num_attention_heads,
        Some(_) => usize_of("attention.head_count_kv")?,
    };
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        bail!("{p}: head_count_kv = {num_key_value_heads} must divide head_count = {num_attention_heads}");
    }
    let head_dim = match f.get(&key("attention.key_length")) {
        Some(_) => usize_of("attention.key_length")?,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => bail!("{p}: embedding_length {hidden_size} is not a multiple of head_count {num_attention_heads}"),
    };
    if let Some(v) = f.get(&key("attention.value_length"))
        && v.as_u64() != Some(head_dim as u64)
    {
        bail!("{p}: `{}` = {v:?} differs from the key length {head_dim}: not supported", key("attention.value_length"));
    }
    if let Some(v) = f.get(&key("rope.dimension_count"))
        && v.as_u64() != Some(head_dim as u64)
    {
        bail!(
            "{p}: `{}` = {v:?} (partial rotary embedding) is not supported; head_dim is {head_dim}",
            key("rope.dimension_count")
        );
    }
    if let Some(v) = f.get(&key("rope.scaling.type"))
        && !matches!(v.as_str(), Some("none"))
    {
        bail!("{p}: `{}` = {v:?} is not supported (only unscaled RoPE)", key("rope.scaling.type"));
    }
    if f.tensor("rope_freqs.weight").is_some() {
        bail!("{p}: tensor `rope_freqs.weight` (Llama-3.1-style RoPE scaling) is not supported");
    }

    let embd = f.tensor("token_embd.weight").with_context(|| format!("{p}: tensor `token_embd.weight` is missing"))?;
    if embd.dims.len() != 2 || embd.dims[0] as usize != hidden_size {
        bail!("{p}: tensor `token_embd.weight` has dims {:?}, expected [{hidden_size}, vocab]", embd.dims);
    }
    let vocab_size = embd.dims[1] as usize;
    if let Some(tokens) = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array())
        && tokens.len() > vocab_size
    {
        bail!("{p}: {} tokens in `tokenizer.ggml.tokens` but only {vocab_size} embedding rows", tokens.len());
    }
    let has = |name: &str| f.tensor(name).is_some();
    let id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|x| x as u32);
    let (attention_bias, o_bias) = match arch {
        Arch::Qwen2 => (true, false),
        _ => (has("blk.0.attn_q.bias"), has("blk.0.attn_output.bias")),
    };
    let config = ModelConfig {
        arch,
        vocab_size,
        hidden_size,
        intermediate_size: usize_of("feed_forward_length")?,
        num_hidden_layers: usize_of("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f.get_f64_opt(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        rope_theta: f.get_f64_opt(&key("rope.freq_base"))?.unwrap_or(10000.0),
        max_position_embeddings: f.get(&key("context_length")).and_then(|v| v.as_u64()).unwrap_or(4096) as usize,
        tie_word_embeddings: !has("output.weight"),
        attention_bias,
        o_bias,
        mlp_bias: has("blk.0.ffn_gate.bias"),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
        pad_token_id: id("tokenizer.ggml.padding_token_id"),
    };
    config.validate().with_context(|| format!("{p}: invalid model shape in the GGUF metadata"))?;
    Ok(config)
}

/// A tensor under its Hugging Face name: name, shape (HF order), f32 values.
type HfTensor = (String, Vec<usize>, Vec<f32>);

/// Dequantises every tensor, renames it, reverses its dims and (llama) un-permutes q/k rows.
/// Tensors are decoded on all available cores; the result keeps file order.
fn load_tensors(f: &GgufFile, bytes: &[u8], cfg: &ModelConfig) -> Result<Vec<HfTensor>> {
    // Names first, so that an unknown tensor is reported before any work is done.
    let hf_names = f
        .tensors
        .iter()
        .map(|t| {
            names::hf_name(&t.name).with_context(|| {
                format!(
                    "{}: tensor `{}` has no Hugging Face counterpart in a {:?} model",
                    f.path.display(),
                    t.name,
                    cfg.arch
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let values = parallel_map(&f.tensors, |t| load_one(f, bytes, cfg, t));
    let mut out = Vec::with_capacity(f.tensors.len());
    for ((hf, t), v) in hf_names.into_iter().zip(&f.tensors).zip(values) {
        out.push((hf, t.shape(), v?));
    }
    check_shapes(f, cfg, &out)?;
    Ok(out)
}

/// One tensor in Hugging Face layout: decoded, and for `llama` q/k rows un-permuted.
fn load_one(f: &GgufFile, bytes: &[u8], cfg: &ModelConfig, t: &GgufTensorInfo) -> Result<Vec<f32>> {
    let values = decode(f, bytes, t)?;
    if cfg.arch != Arch::Llama {
        return Ok(values);
    }
    match names::qk_heads(&t.name, cfg.num_attention_heads, cfg.num_key_value_heads) {
        None => Ok(values),
        Some(heads) => {
            let rows = t.shape().first().copied().unwrap_or(0);
            names::unpermute_rows(&values, rows, heads)
                .with_context(|| format!("{}: tensor `{}`", f.path.display(), t.name))
        }
    }
}

/// `items.iter().map(work)` on up to `available_parallelism` scoped threads, results in order.
fn parallel_map<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break mine;
                        }
                        mine.push((i, work(&items[i])));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Every parameter the config implies is present with the shape it implies.
fn check_shapes(f: &GgufFile, cfg: &ModelConfig, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let mut want: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![v, h]), ("model.norm.weight".into(), vec![h])];
    if !cfg.tie_word_embeddings {
        want.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let n = |s: &str| format!("model.layers.{l}.{s}");
        want.extend([
            (n("self_attn.q_proj.weight"), vec![q, h]),
            (n("self_attn.k_proj.weight"), vec![kv, h]),
            (n("self_attn.v_proj.weight"), vec![kv, h]),
            (n("self_attn.o_proj.weight"), vec![h, q]),
            (n("mlp.gate_proj.weight"), vec![i, h]),
            (n("mlp.up_proj.weight"), vec![i, h]),
            (n("mlp.down_proj.weight"), vec![h, i]),
            (n("input_layernorm.weight"), vec![h]),
            (n("post_attention_layernorm.weight"), vec![h]),
        ]);
        if cfg.attention_bias {
            want.extend([
                (n("self_attn.q_proj.bias"), vec![q]),
                (n("self_attn.k_proj.bias"), vec![kv]),
                (n("self_attn.v_proj.bias"), vec![kv]),
            ]);
        }
        if cfg.o_bias {
            want.push((n("self_attn.o_proj.bias"), vec![h]));
        }
        if cfg.mlp_bias {
            want.extend([
                (n("mlp.gate_proj.bias"), vec![i]),
                (n("mlp.up_proj.bias"), vec![i]),
                (n("mlp.down_proj.bias"), vec![h]),
            ]);
        }
    }
    for (name, shape) in &want {
        match tensors.iter().find(|(n, _, _)| n == name) {
            None => bail!("{}: tensor for `{name}` (shape {shape:?}) is missing", f.path.display()),
            Some((_, got, _)) if got != shape => {
                bail!("{}: tensor `{name}` has shape {got:?}, expected {shape:?} from the metadata", f.path.display())
            }
            Some(_) => {}
        }
    }
    if tensors.len() != want.len() {
        bail!(
            "{}: {} tensors, but the metadata implies {}: extra layers or parameters?",
            f.path.display(),
            tensors.len(),
            want.len()
        );
    }
    Ok(())
}
