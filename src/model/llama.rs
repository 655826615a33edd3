//! The decoder: token embedding → N × (RMSNorm → GQA attention with RoPE → residual → RMSNorm →
//! SwiGLU MLP → residual) → RMSNorm → lm_head (tied or not). One struct per block, as in
//! transformers' `modeling_llama.py`, so a reader can hold both side by side.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::ModelConfig;
use super::layout::Layout;
use super::rope::{Rope, apply_rope};

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// A causal language model. `lm_head` is `None` when the output projection is tied to the
/// token embedding.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Option<Linear>,
}

/// Per-layer key/value cache for generation: `[B, n_kv_heads, T_past, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

/// Inputs of one forward pass as tensors: ids `[B, T]`, rope tables, additive mask `[B, 1, T, S]`.
pub struct ForwardInputs {
    pub input_ids: Tensor<2, Int>,
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    pub bias: Tensor<4>,
}

impl ForwardInputs {
    pub fn from_layout(layout: &Layout, rope: &Rope, device: &Device) -> Self {
        let (b, t) = (layout.batch, layout.len);
        let input_ids = Tensor::from_data(TensorData::new(layout.input_ids.clone(), [b, t]), device);
        let (cos, sin) = rope.tables(&layout.position_ids, b, t, device);
        let bias = Tensor::<3>::from_data(TensorData::new(layout.attention_bias(), [b, t, t]), device)
            .unsqueeze_dim(1);
        ForwardInputs { input_ids, cos, sin, bias }
    }
}

impl Attention {
    /// `x: [B, T, H]` → `[B, T, H]`. With a cache, keys/values of past tokens are prepended and
    /// `bias` must be `[B, 1, T, T_past + T]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x.clone()).reshape([b, t, nh, hd]).swap_dims(1, 2);
        let k = self.k_proj.forward(x.clone()).reshape([b, t, nkv, hd]).swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([b, t, nkv, hd]).swap_dims(1, 2);
        let q = apply_rope(q, cos, sin);
        let mut k = apply_rope(k, cos, sin);
        let mut v = v;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let s = k.dims()[2];
        // Grouped-query attention: each kv head serves n_heads / n_kv_heads query heads.
        let rep = nh / nkv;
        let (k, v) = if rep == 1 {
            (k, v)
        } else {
            (
                k.unsqueeze_dim::<5>(2).expand([b, nkv, rep, s, hd]).reshape([b, nh, s, hd]),
                v.unsqueeze_dim::<5>(2).expand([b, nkv, rep, s, hd]).reshape([b, nh, s, hd]),
            )
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + bias.clone();
        let probs = softmax(scores, 3);
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.o_proj.forward(out)
    }
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

impl DecoderLayer {
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, bias, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

impl CausalLm {
    /// Final hidden states `[B, T, H]` (after the last norm).
    pub fn hidden(&self, inputs: &ForwardInputs, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let mut x = self.embed_tokens.forward(inputs.input_ids.clone());
        if let Some(c) = cache.as_deref_mut() {
            if c.layers.len() != self.layers.len() {
                c.layers = vec![None; self.layers.len()];
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &inputs.cos, &inputs.sin, &inputs.bias, slot);
        }
        self.norm.forward(x)
    }

    /// Vocabulary logits for hidden states `[..., H]` → `[..., V]`.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let w = self.embed_tokens.weight.val(); // [V, H]
                burn::tensor::module::linear(hidden, w.transpose(), None)
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Builds an untrained model of the given shape (random weights; used by benchmarks and tests).
pub fn init_random(cfg: &ModelConfig, device: &Device) -> CausalLm {
    use burn::nn::{EmbeddingConfig, LinearConfig, RmsNormConfig};
    let h = cfg.hidden_size;
    let lin = |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
    let norm = || RmsNormConfig::new(h).with_epsilon(cfg.rms_norm_eps).init(device);
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| DecoderLayer {
            input_layernorm: norm(),
            self_attn: Attention {
                q_proj: lin(h, cfg.num_attention_heads * cfg.head_dim, cfg.attention_bias),
                k_proj: lin(h, cfg.num_key_value_heads * cfg.head_dim, cfg.attention_bias),
                v_proj: lin(h, cfg.num_key_value_heads * cfg.head_dim, cfg.attention_bias),
                o_proj: lin(cfg.num_attention_heads * cfg.head_dim, h, cfg.o_bias),
                n_heads: cfg.num_attention_heads,
                n_kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
            },
            post_attention_layernorm: norm(),
            mlp: Mlp {
                gate_proj: lin(h, cfg.intermediate_size, cfg.mlp_bias),
                up_proj: lin(h, cfg.intermediate_size, cfg.mlp_bias),
                down_proj: lin(cfg.intermediate_size, h, cfg.mlp_bias),
            },
        })
        .collect();
    CausalLm {
        embed_tokens: EmbeddingConfig::new(cfg.vocab_size, h)
            .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std: 0.02 })
            .init(device),
        layers,
        norm: norm(),
        lm_head: if cfg.tie_word_embeddings { None } else { Some(lin(h, cfg.vocab_size, false)) },
    }
}

/// Wraps a host f32 buffer as a parameter.
pub fn param<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}
