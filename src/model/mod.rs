//! Decoder-only transformers (Llama, Mistral, Qwen2, SmolLM2) on burn, loaded from Hugging Face
//! folders or GGUF files.

pub mod config;
pub mod gguf;
pub use config::{Arch, ModelConfig};
