//! Named f32 weights in Hugging Face layout, from safetensors files (single or sharded) or any
//! other source (GGUF), and the conversion of such a map into a [`CausalLm`].
//!
//! Every missing or mis-shaped tensor is an error naming the tensor and the file it came from.

use anyhow::{Context, Result, bail};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::Device;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::llama::{Attention, CausalLm, DecoderLayer, Mlp, param};

/// One tensor: shape (HF layout, row-major) and values.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Row-major shape, Hugging Face order (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// The values, row-major: as many as the product of `shape`.
    pub data: Vec<f32>,
}

/// Tensors by Hugging Face name, each remembering the file it was read from (for error messages).
#[derive(Debug, Default)]
pub struct WeightMap {
    tensors: HashMap<String, (HostTensor, PathBuf)>,
}

impl WeightMap {
    /// Adds (or replaces) tensor `name`, remembering `origin` as the file it came from.
    pub fn insert(&mut self, name: String, t: HostTensor, origin: &Path) {
        self.tensors.insert(name, (t, origin.to_path_buf()));
    }

    /// Number of tensors held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor is held.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Reads `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn from_hf_folder(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut map = WeightMap::default();
        if single.exists() {
            map.read_safetensors(&single)?;
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", index.display()))?;
            let wm = v
                .get("weight_map")
                .and_then(|x| x.as_object())
                .with_context(|| format!("{}: field `weight_map` missing or not an object", index.display()))?;
            let mut shards: Vec<&str> = wm.values().filter_map(|x| x.as_str()).collect();
            shards.sort();
            shards.dedup();
            for s in shards {
                map.read_safetensors(&dir.join(s))?;
            }
        } else {
            bail!("{}: no model.safetensors or model.safetensors.index.json in this folder", dir.display());
        }
        Ok(map)
    }

    /// Adds every tensor of one safetensors file (F32, F16 or BF16; converted to f32).
    pub fn read_safetensors(&mut self, path: &Path) -> Result<()> {
        use safetensors::{Dtype, SafeTensors};
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        for (name, view) in st.tensors() {
            let bytes = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => {
                    bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                other => bail!("{}: tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16", path.display()),
            };
            self.insert(name, HostTensor { shape: view.shape().to_vec(), data }, path);
        }
        Ok(())
    }

    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (t, origin) = match self.tensors.remove(name) {
            Some(x) => x,
            None => bail!("tensor `{name}` is missing from the model weights"),
        };
        if t.shape != shape {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {:?} from config.json",
                origin.display(),
                t.shape,
                shape
            );
        }
        Ok(t.data)
    }

    /// Whether a tensor named `name` is held.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor's shape, without taking it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(t, _)| t.shape.as_slice())
    }
}

/// `[out, in]` row-major (PyTorch) → `[in, out]` row-major (burn's Linear).
pub fn transpose(data: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let mut t = vec![0f32; data.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = data[o * inp + i];
        }
    }
    t
}

fn linear(w: &mut WeightMap, prefix: &str, inp: usize, out: usize, bias: bool, device: &Device) -> Result<Linear> {
    let weight = w.take(&format!("{prefix}.weight"), &[out, inp])?;
    let bias = if bias { Some(param(w.take(&format!("{prefix}.bias"), &[out])?, [out], device)) } else { None };
    Ok(Linear { weight: param(transpose(&weight, out, inp), [inp, out], device), bias })
}

fn rms_norm(w: &mut WeightMap, name: &str, h: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
    Ok(RmsNorm { gamma: param(w.take(name, &[h])?, [h], device), epsilon: eps })
}

/// The decoder body every head sits on: token embedding, layers, final norm (no head).
pub struct DecoderBody {
    /// Token embedding `[V, H]`.
    pub embed_tokens: Embedding,
    /// The decoder blocks, in order.
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
}

/// Takes the decoder body's tensors (`model.embed_tokens`, `model.layers.*`, `model.norm`) from a
/// weight map; the head's tensors are left for the caller.
pub fn build_body(cfg: &ModelConfig, w: &mut WeightMap, device: &Device) -> Result<DecoderBody> {
    cfg.validate()?;
    let h = cfg.hidden_size;
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(DecoderLayer {
            input_layernorm: rms_norm(w, &format!("{p}.input_layernorm.weight"), h, cfg.rms_norm_eps, device)?,
            self_attn: Attention {
                q_proj: linear(w, &format!("{p}.self_attn.q_proj"), h, nh * hd, cfg.attention_bias, device)?,
                k_proj: linear(w, &format!("{p}.self_attn.k_proj"), h, nkv * hd, cfg.attention_bias, device)?,
                v_proj: linear(w, &format!("{p}.self_attn.v_proj"), h, nkv * hd, cfg.attention_bias, device)?,
                o_proj: linear(w, &format!("{p}.self_attn.o_proj"), nh * hd, h, cfg.o_bias, device)?,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
            },
            post_attention_layernorm: rms_norm(
                w,
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                cfg.rms_norm_eps,
                device,
            )?,
            mlp: Mlp {
                gate_proj: linear(w, &format!("{p}.mlp.gate_proj"), h, cfg.intermediate_size, cfg.mlp_bias, device)?,
                up_proj: linear(w, &format!("{p}.mlp.up_proj"), h, cfg.intermediate_size, cfg.mlp_bias, device)?,
                down_proj: linear(w, &format!("{p}.mlp.down_proj"), cfg.intermediate_size, h, cfg.mlp_bias, device)?,
            },
        });
    }
    let embed = w.take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
    let norm = rms_norm(w, "model.norm.weight", h, cfg.rms_norm_eps, device)?;
    Ok(DecoderBody { embed_tokens: Embedding { weight: param(embed, [cfg.vocab_size, h], device) }, layers, norm })
}

impl DecoderBody {
    /// The body as a [`CausalLm`] with the given head (`None`: tied to the embedding).
    pub fn with_lm_head(self, lm_head: Option<Linear>) -> CausalLm {
        CausalLm {
            embed_tokens: self.embed_tokens,
            layers: self.layers,
            norm: self.norm,
            lm_head,
            precision: crate::device::Precision::Float32,
            fused_head: true,
        }
    }
}

/// The head a set of weights was saved with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `*ForCausalLM`: `lm_head.weight` `[vocab, hidden]` (absent when tied to the embedding).
    Lm,
    /// `*ForSequenceClassification`: `score.weight` `[num_labels, hidden]`, no bias.
    Score,
}

/// Builds the model from a weight map. Unused tensors (e.g. rotary caches) are ignored;
/// a tied model's `lm_head.weight`, if present, must equal the embedding and is dropped.
/// A reward model's weights (a `score` head) are refused with a message saying so.
pub fn build_model(cfg: &ModelConfig, w: &mut WeightMap, device: &Device) -> Result<CausalLm> {
    if w.contains("score.weight") && !w.contains("lm_head.weight") {
        bail!(
            "these weights have a `score` head and no `lm_head`: a sequence-classification (reward) model, \
             not a causal LM; use it as a judge (`epa eval --judge rm:PATH`)"
        );
    }
    let body = build_body(cfg, w, device)?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(linear(w, "lm_head", cfg.hidden_size, cfg.vocab_size, false, device)?)
    };
    check_all_used(cfg, w, Head::Lm)?;
    Ok(body.with_lm_head(lm_head))
}

/// Builds a reward model's body and its `score` head (`[1, hidden]` in HF layout, one label), from a
/// `*ForSequenceClassification` checkpoint. Causal-LM weights (no `score.weight`) are refused with a
/// message saying so; every tensor must be used, as for [`build_model`].
pub fn build_reward_model(cfg: &ModelConfig, w: &mut WeightMap, device: &Device) -> Result<(DecoderBody, Linear)> {
    let Some(shape) = w.shape("score.weight").map(<[usize]>::to_vec) else {
        let what = if w.contains("lm_head.weight") || cfg.tie_word_embeddings {
            "a causal LM (an `lm_head`)"
        } else {
            "no reward head"
        };
        bail!(
            "tensor `score.weight` is missing: these weights are {what}, not a sequence-classification reward model \
             (LlamaForSequenceClassification, Qwen2ForSequenceClassification, MistralForSequenceClassification)"
        );
    };
    if shape.len() != 2 || shape[1] != cfg.hidden_size || shape[0] != 1 {
        bail!(
            "tensor `score.weight` has shape {shape:?}; a reward model's head is [1, {}] (num_labels = 1): \
             a classifier with several labels is not a reward model",
            cfg.hidden_size
        );
    }
    let body = build_body(cfg, w, device)?;
    let score = linear(w, "score", cfg.hidden_size, 1, false, device)?;
    check_all_used(cfg, w, Head::Score)?;
    Ok((body, score))
}

/// Tensors left after the model took its own mean the config does not describe the weights (fewer
/// layers than were saved, a missing bias flag): an error, as a missing tensor is. Two leftovers
/// are normal and ignored, as transformers ignores them: a saved `lm_head.weight` under tied
/// embeddings (causal LMs only), and the rotary `inv_freq` buffers older checkpoints carry.
fn check_all_used(cfg: &ModelConfig, w: &WeightMap, head: Head) -> Result<()> {
    let tied_copy = |n: &str| head == Head::Lm && cfg.tie_word_embeddings && n == "lm_head.weight";
    let mut unused: Vec<(&String, &PathBuf)> = w
        .tensors
        .iter()
        .filter(|(n, _)| !(n.ends_with("rotary_emb.inv_freq") || tied_copy(n)))
        .map(|(n, (_, origin))| (n, origin))
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    unused.sort();
    let shown: Vec<String> = unused.iter().take(5).map(|(n, o)| format!("`{n}` ({})", o.display())).collect();
    let more = if unused.len() > 5 { format!(" and {} more", unused.len() - 5) } else { String::new() };
    bail!(
        "{} tensor(s) in the weights are not used by the config ({} layers, attention_bias = {}, mlp_bias = {}): {}{more}; \
         the config does not describe these weights",
        unused.len(),
        cfg.num_hidden_layers,
        cfg.attention_bias,
        cfg.mlp_bias,
        shown.join(", ")
    )
}
