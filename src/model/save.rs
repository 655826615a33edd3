//! Writes a model back as a Hugging Face folder: `model.safetensors` (float32, HF names and
//! layouts) and `config.json`. Tokenizer files are written by the text module beside them.

use anyhow::{Context, Result};
use burn::tensor::Tensor;
use std::path::Path;

use super::config::ModelConfig;
use super::llama::CausalLm;
use super::weights::transpose;

fn host<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    let data = super::host_f32(t);
    (shape, data)
}

/// A parameter tensor with its Hugging Face name. Linear weights are stored `[in, out]` by burn
/// and must be transposed to HF's `[out, in]`.
pub enum NamedTensor {
    /// A linear layer's weight, burn's `[in, out]`, transposed on export.
    LinearWeight(Tensor<2>),
    /// A vector (bias or norm scale), written as is.
    Plain1(Tensor<1>),
    /// A matrix already in HF layout (the token embedding `[V, H]`), written as is.
    Plain2(Tensor<2>),
}

impl NamedTensor {
    /// Shape and values in Hugging Face layout.
    pub fn to_hf_host(&self) -> (Vec<usize>, Vec<f32>) {
        match self {
            NamedTensor::LinearWeight(t) => {
                let (s, d) = host(t.clone());
                (vec![s[1], s[0]], transpose(&d, s[0], s[1]))
            }
            NamedTensor::Plain1(t) => host(t.clone()),
            NamedTensor::Plain2(t) => host(t.clone()),
        }
    }

    /// The tensor's dtype.
    pub fn dtype(&self) -> burn::tensor::DType {
        match self {
            NamedTensor::LinearWeight(t) | NamedTensor::Plain2(t) => t.dtype(),
            NamedTensor::Plain1(t) => t.dtype(),
        }
    }

    /// The same entry with each tensor mapped (e.g. to its gradient).
    pub fn map(
        &self,
        f1: impl Fn(&Tensor<1>) -> Option<Tensor<1>>,
        f2: impl Fn(&Tensor<2>) -> Option<Tensor<2>>,
    ) -> Option<NamedTensor> {
        Some(match self {
            NamedTensor::LinearWeight(t) => NamedTensor::LinearWeight(f2(t)?),
            NamedTensor::Plain1(t) => NamedTensor::Plain1(f1(t)?),
            NamedTensor::Plain2(t) => NamedTensor::Plain2(f2(t)?),
        })
    }
}

/// Every parameter under its Hugging Face name (with tied embeddings, only
/// `model.embed_tokens.weight`).
pub fn named_params(model: &CausalLm) -> Vec<(String, NamedTensor)> {
    use NamedTensor::*;
    let mut out = Vec::new();
    let linear = |name: String, l: &burn::nn::Linear, out: &mut Vec<(String, NamedTensor)>| {
        out.push((format!("{name}.weight"), LinearWeight(l.weight.val())));
        if let Some(b) = &l.bias {
            out.push((format!("{name}.bias"), Plain1(b.val())));
        }
    };
    out.push(("model.embed_tokens.weight".to_string(), Plain2(model.embed_tokens.weight.val())));
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), Plain1(layer.input_layernorm.gamma.val())));
        let a = &layer.self_attn;
        linear(format!("{p}.self_attn.q_proj"), &a.q_proj, &mut out);
        linear(format!("{p}.self_attn.k_proj"), &a.k_proj, &mut out);
        linear(format!("{p}.self_attn.v_proj"), &a.v_proj, &mut out);
        linear(format!("{p}.self_attn.o_proj"), &a.o_proj, &mut out);
        out.push((format!("{p}.post_attention_layernorm.weight"), Plain1(layer.post_attention_layernorm.gamma.val())));
        linear(format!("{p}.mlp.gate_proj"), &layer.mlp.gate_proj, &mut out);
        linear(format!("{p}.mlp.up_proj"), &layer.mlp.up_proj, &mut out);
        linear(format!("{p}.mlp.down_proj"), &layer.mlp.down_proj, &mut out);
    }
    out.push(("model.norm.weight".to_string(), Plain1(model.norm.gamma.val())));
    if let Some(head) = &model.lm_head {
        linear("lm_head".to_string(), head, &mut out);
    }
    out
}

/// Every parameter under its Hugging Face name, in HF layout, on the host.
pub fn hf_tensors(model: &CausalLm) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    named_params(model)
        .into_iter()
        .map(|(n, t)| {
            let (s, d) = t.to_hf_host();
            (n, s, d)
        })
        .collect()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    let r = tmp
        .1
        .write_all(bytes)
        .and_then(|_| tmp.1.sync_all())
        .with_context(|| format!("cannot write {}", tmp.0.display()))
        .and_then(|_| {
            std::fs::rename(&tmp.0, path)
                .with_context(|| format!("cannot move {} to {}", tmp.0.display(), path.display()))
        });
    if r.is_err() {
        std::fs::remove_file(&tmp.0).ok();
    }
    r
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok((tmp, f))
}

/// Serialises named f32 tensors to safetensors bytes (with `{"format": "pt"}` metadata, as
/// transformers expects).
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(safetensors::tensor::serialize(views, Some(meta))?)
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed).
pub fn save_weights(model: &CausalLm, cfg: &ModelConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = safetensors_bytes(&hf_tensors(model))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let config = serde_json::to_string_pretty(&cfg.to_hf_json())?;
    write_atomic(&dir.join("config.json"), config.as_bytes())?;
    let mut generation = serde_json::json!({});
    if let Some(b) = cfg.bos_token_id {
        generation["bos_token_id"] = b.into();
    }
    if let Some(e) = cfg.eos_token_id {
        generation["eos_token_id"] = e.into();
    }
    write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&generation)?.as_bytes())?;
    Ok(())
}
