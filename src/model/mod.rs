//! Decoder-only transformers (Llama, Mistral, Qwen2, SmolLM2) on burn, loaded from Hugging Face
//! folders or GGUF files.
//!
//! - [`config`]: the shape (`config.json`).
//! - [`llama`]: the decoder itself.
//! - [`rope`], [`layout`]: positions and attention masks, given per batch.
//! - [`weights`]: named tensors → model; [`save`]: model → HF folder; [`gguf`]: GGUF files.
//! - [`load`]: one entry point for folders, GGUF files, hub ids and the built-in `smollm2`.
//! - [`generate`]: batched sampling with a KV cache.
//! - [`reward`]: sequence-classification reward models (decoder + `score` head).

pub mod config;
pub mod generate;
pub mod gguf;
pub mod head;
pub mod kernels;
pub mod kernels_norm;
pub mod kernels_rope;
pub mod layout;
pub mod llama;
pub mod load;
pub mod lora;
pub mod reward;
pub mod rope;
pub mod save;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use layout::Layout;
pub use llama::{CausalLm, ForwardInputs, KvCache};
pub use rope::Rope;

/// A float tensor's values on the host, as f32 (whatever the tensor's dtype and device).
pub fn host_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("float tensor converts to f32")
}
