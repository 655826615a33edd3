//! The decoder: token embedding → N × (RMSNorm → GQA attention with RoPE → residual → RMSNorm →
//! SwiGLU MLP → residual) → RMSNorm → lm_head (tied or not). One struct per block, as in
//! transformers' `modeling_llama.py`, so a reader can hold both side by side.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::device::Precision;

use super::config::ModelConfig;
use super::layout::{AttentionBlocks, Layout};
use super::rope::{Rope, apply_rope};

/// Grouped-query self-attention with RoPE: `n_heads` query heads share `n_kv_heads` key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection `H → n_heads·head_dim` (bias when `attention_bias`).
    pub q_proj: Linear,
    /// Key projection `H → n_kv_heads·head_dim` (bias when `attention_bias`).
    pub k_proj: Linear,
    /// Value projection `H → n_kv_heads·head_dim` (bias when `attention_bias`).
    pub v_proj: Linear,
    /// Output projection `n_heads·head_dim → H` (bias when `o_bias`).
    pub o_proj: Linear,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// SwiGLU feed-forward block: `down_proj(silu(gate_proj(x)) · up_proj(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection `H → intermediate_size`, passed through SiLU.
    pub gate_proj: Linear,
    /// Up projection `H → intermediate_size`, multiplied by the gate.
    pub up_proj: Linear,
    /// Down projection `intermediate_size → H`.
    pub down_proj: Linear,
}

/// One pre-norm decoder block: `x + attn(norm(x))`, then `h + mlp(norm(h))`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// RMSNorm of the block input, before attention.
    pub input_layernorm: RmsNorm,
    /// Grouped-query self-attention over the normed input.
    pub self_attn: Attention,
    /// RMSNorm of the attention residual, before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// SwiGLU feed-forward over the normed attention output.
    pub mlp: Mlp,
}

/// A causal language model. `lm_head` is `None` when the output projection is tied to the
/// token embedding.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// Token embedding `[V, H]` (also the output projection when `lm_head` is `None`).
    pub embed_tokens: Embedding,
    /// The decoder blocks, in order.
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm, applied before the logits.
    pub norm: RmsNorm,
    /// Output projection `H → V`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// The dtype the forward pass computes in (parameters stay as loaded: float32).
    #[module(skip)]
    pub precision: Precision,
    /// Score response tokens through the fused head ([`super::head`]) where it runs (the CPU,
    /// float32); otherwise logits → log-softmax → gather.
    #[module(skip)]
    pub fused_head: bool,
}

/// `x · W + b` in `x`'s dtype: under bf16 compute the float32 weights are cast per forward (the
/// cast is differentiable, so gradients reach the float32 master weights). Float32 input takes
/// burn's own `Linear::forward`, unchanged.
fn lin<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dt = x.dtype();
    if dt == FloatDType::F32.into() {
        return l.forward(x);
    }
    let dt = FloatDType::from(dt);
    burn::tensor::module::linear(x, l.weight.val().cast(dt), l.bias.as_ref().map(|b| b.val().cast(dt)))
}

/// RMSNorm with float32 statistics and scale whatever the compute dtype (as transformers'
/// `LlamaRMSNorm`), the result in `x`'s dtype. Float32 input takes [`super::kernels_norm::rms_norm`]
/// (one row-parallel op on the CPU, burn's `RmsNorm::forward` elsewhere).
fn norm(n: &RmsNorm, x: Tensor<3>) -> Tensor<3> {
    let dt = x.dtype();
    if dt == FloatDType::F32.into() {
        return super::kernels_norm::rms_norm(x, n.gamma.val(), n.epsilon);
    }
    let xf = x.cast(FloatDType::F32);
    let rms = (xf.clone().square().mean_dim(2) + n.epsilon).sqrt();
    ((xf / rms) * n.gamma.val().unsqueeze()).cast(FloatDType::from(dt))
}

/// Per-layer key/value cache for generation: `[B, T_past, n_kv_heads, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One slot per layer: its `(keys, values)` so far (keys already rotated), `None` until the first
    /// forward pass fills it.
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

/// Inputs of one forward pass as tensors: ids `[B, T]`, rope tables `[B, T, 1, head_dim]`
/// ([`Rope::tables`]), additive mask `[B, 1, T, S]`.
pub struct ForwardInputs {
    /// Token ids `[B, T]`.
    pub input_ids: Tensor<2, Int>,
    /// RoPE cosines `[B, T, 1, head_dim]`.
    pub cos: Tensor<4>,
    /// RoPE sines `[B, T, 1, head_dim]`, with rotate-half's sign.
    pub sin: Tensor<4>,
    /// Additive attention mask `[B, 1, T, S]` (`S` = cached + new keys); a `[1, 1, 1, 1]` placeholder
    /// when [`ForwardInputs::blocked`] returned blocks.
    pub bias: Tensor<4>,
}

impl ForwardInputs {
    /// Dense inputs for any layout (the mask as a `[B, 1, T, T]` bias).
    pub fn from_layout(layout: &Layout, rope: &Rope, device: &Device) -> Self {
        let (b, t) = (layout.batch, layout.len);
        let bias = Tensor::<3>::from_data(TensorData::new(layout.attention_bias(), [b, t, t]), device).unsqueeze_dim(1);
        Self::with_bias(layout, rope, bias, device)
    }

    /// Inputs for [`CausalLm::hidden_with`]: block-sparse attention when the layout shares
    /// prefixes (then no dense bias is built), dense otherwise.
    pub fn blocked(layout: &Layout, rope: &Rope, device: &Device) -> (Self, Option<BlockInputs>) {
        match layout.blocks() {
            Some(blocks) => {
                let dummy = Tensor::zeros([1, 1, 1, 1], device);
                (Self::with_bias(layout, rope, dummy, device), Some(BlockInputs::new(&blocks, device)))
            }
            None => (Self::from_layout(layout, rope, device), None),
        }
    }

    fn with_bias(layout: &Layout, rope: &Rope, bias: Tensor<4>, device: &Device) -> Self {
        let (b, t) = (layout.batch, layout.len);
        let input_ids = Tensor::from_data(TensorData::new(layout.input_ids.clone(), [b, t]), device);
        let (cos, sin) = rope.tables(&layout.position_ids, b, t, device);
        ForwardInputs { input_ids, cos, sin, bias }
    }
}

/// [`AttentionBlocks`] as tensors.
pub struct BlockInputs {
    prompt_pos: Tensor<1, Int>,
    prompt_bias: Tensor<4>,
    response_pos: Tensor<1, Int>,
    key_pos: Tensor<1, Int>,
    response_bias: Tensor<4>,
    back: Tensor<1, Int>,
    rows: usize,
    prompt_len: usize,
    responses: usize,
    response_len: usize,
}

impl BlockInputs {
    /// Uploads a block plan's positions and biases to `device`.
    pub fn new(a: &AttentionBlocks, device: &Device) -> Self {
        let ids = |v: &Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v.clone(), [v.len()]), device);
        let (lp, lr) = (a.prompt_len, a.response_len);
        BlockInputs {
            prompt_pos: ids(&a.prompt_pos),
            prompt_bias: Tensor::from_data(TensorData::new(a.prompt_bias.clone(), [a.rows, 1, lp, lp]), device),
            response_pos: ids(&a.response_pos),
            key_pos: ids(&a.key_pos),
            response_bias: Tensor::from_data(
                TensorData::new(a.response_bias.clone(), [a.responses, 1, lr, lp + lr]),
                device,
            ),
            back: ids(&a.back),
            rows: a.rows,
            prompt_len: lp,
            responses: a.responses,
            response_len: lr,
        }
    }
}

/// How queries see keys in a forward pass.
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    /// Additive bias `[B, 1, T, S]` over all keys.
    Dense(&'a Tensor<4>),
    /// Prefix-shared rows, attended block by block.
    Blocks(&'a BlockInputs),
}

/// Scaled dot-product attention with grouped-query heads, without materialising repeated keys:
/// the `rep = n_heads / n_kv_heads` query heads of a kv head are stacked along the query axis.
/// `q: [N, L, n_heads, D]`, `k, v: [N, S, n_kv_heads, D]`, `bias: [N, 1, L, S]` → `[N, L, n_heads·D]`.
fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: &Tensor<4>) -> Tensor<3> {
    let [n, l, nh, hd] = q.dims();
    let [_, s, nkv, _] = k.dims();
    let rep = nh / nkv;
    // 1/√d is a power of two for the usual head sizes, so scaling q first is exact.
    let q = q.mul_scalar(1.0 / (hd as f64).sqrt()).swap_dims(1, 2).reshape([n, nkv, rep * l, hd]);
    // Scores, mask and softmax in float32 whatever the compute dtype; probabilities back in it.
    let dt = FloatDType::from(q.dtype());
    let scores = q.matmul(k.permute([0, 2, 3, 1])).reshape([n, nkv, rep, l, s]).cast(FloatDType::F32)
        + bias.clone().unsqueeze_dim::<5>(2);
    let probs = super::kernels::softmax_last(scores).cast(dt).reshape([n, nkv, rep * l, s]);
    let out = probs.matmul(v.swap_dims(1, 2)); // [N, nkv, rep·L, D]
    out.reshape([n, nh, l, hd]).swap_dims(1, 2).reshape([n, l, nh * hd])
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
        self.forward_with(x, cos, sin, Mask::Dense(bias), cache)
    }

    /// As [`Attention::forward`], with either mask kind (no cache with blocks).
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: Mask<'_>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = apply_rope(lin(&self.q_proj, x.clone()).reshape([b, t, nh, hd]), cos, sin);
        let mut k = apply_rope(lin(&self.k_proj, x.clone()).reshape([b, t, nkv, hd]), cos, sin);
        let mut v = lin(&self.v_proj, x).reshape([b, t, nkv, hd]);
        let out = match mask {
            Mask::Dense(bias) => {
                if let Some(slot) = cache {
                    if let Some((pk, pv)) = slot.take() {
                        k = Tensor::cat(vec![pk, k], 1);
                        v = Tensor::cat(vec![pv, v], 1);
                    }
                    *slot = Some((k.clone(), v.clone()));
                }
                attend(q, k, v, bias)
            }
            Mask::Blocks(bl) => {
                assert!(cache.is_none(), "block attention has no key/value cache");
                let (q, k, v) =
                    (q.reshape([b * t, nh * hd]), k.reshape([b * t, nkv * hd]), v.reshape([b * t, nkv * hd]));
                let pick = |x: &Tensor<2>, idx: &Tensor<1, Int>, n: usize, l: usize, heads: usize| {
                    x.clone().select(0, idx.clone()).reshape([n, l, heads, hd])
                };
                let (r, lp, nr, lr) = (bl.rows, bl.prompt_len, bl.responses, bl.response_len);
                let prompt = attend(
                    pick(&q, &bl.prompt_pos, r, lp, nh),
                    pick(&k, &bl.prompt_pos, r, lp, nkv),
                    pick(&v, &bl.prompt_pos, r, lp, nkv),
                    &bl.prompt_bias,
                );
                let responses = attend(
                    pick(&q, &bl.response_pos, nr, lr, nh),
                    pick(&k, &bl.key_pos, nr, lp + lr, nkv),
                    pick(&v, &bl.key_pos, nr, lp + lr, nkv),
                    &bl.response_bias,
                );
                Tensor::cat(vec![prompt.reshape([r * lp, nh * hd]), responses.reshape([nr * lr, nh * hd])], 0)
                    .select(0, bl.back.clone())
                    .reshape([b, t, nh * hd])
            }
        };
        lin(&self.o_proj, out)
    }
}

impl Mlp {
    /// `x: [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = lin(&self.gate_proj, x.clone());
        lin(&self.down_proj, super::kernels::swiglu(gate, lin(&self.up_proj, x)))
    }
}

impl DecoderLayer {
    /// `x: [B, T, H]` → `[B, T, H]`; `cache` is this layer's slot of a [`KvCache`] (dense masks only).
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: Mask<'_>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward_with(norm(&self.input_layernorm, x), cos, sin, mask, cache);
        h.clone() + self.mlp.forward(norm(&self.post_attention_layernorm, h))
    }
}

impl CausalLm {
    /// Final hidden states `[B, T, H]` (after the last norm), dense attention.
    pub fn hidden(&self, inputs: &ForwardInputs, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.hidden_with(inputs, None, cache)
    }

    /// Final hidden states, with block-sparse attention when `blocks` is given (from
    /// [`ForwardInputs::blocked`]; no cache then).
    pub fn hidden_with(
        &self,
        inputs: &ForwardInputs,
        blocks: Option<&BlockInputs>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let mask = match blocks {
            Some(b) => Mask::Blocks(b),
            None => Mask::Dense(&inputs.bias),
        };
        let mut x = self.embed_tokens.forward(inputs.input_ids.clone()).cast(self.precision.float_dtype());
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &inputs.cos, &inputs.sin, mask, slot);
        }
        norm(&self.norm, x)
    }

    /// Vocabulary logits for hidden states `[..., H]` → `[..., V]`, computed in the hidden states'
    /// dtype and returned as float32 (the log-softmax after it runs in float32).
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let logits = match &self.lm_head {
            Some(head) => lin(head, hidden),
            None => {
                let dt = FloatDType::from(hidden.dtype());
                let w = self.embed_tokens.weight.val().cast(dt); // [V, H]
                burn::tensor::module::linear(hidden, w.transpose(), None)
            }
        };
        logits.cast(FloatDType::F32)
    }

    /// `log softmax(logits(hidden))[target]` per row: hidden states `[N, H]` and target ids `[N]`
    /// → log-probs `[N]` (float32). Through the fused head ([`super::head`]) when `fused_head` and
    /// it runs here (the CPU, float32 compute); otherwise the full logits, their log-softmax and a
    /// gather.
    pub fn target_logps(&self, hidden: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let n = hidden.dims()[0];
        if self.fused_head && hidden.dtype() == FloatDType::F32.into() && super::head::supported(&hidden.device()) {
            let w = match &self.lm_head {
                Some(head) => head.weight.val().transpose(), // burn's Linear stores [H, V]
                None => self.embed_tokens.weight.val(),
            };
            return super::head::target_logps(hidden, w, targets);
        }
        let logp = burn::tensor::activation::log_softmax(self.logits(hidden), 1);
        logp.gather(1, targets.reshape([n, 1])).reshape([n])
    }

    /// The device the weights live on (an autodiff device for a model being trained).
    pub fn device(&self) -> Device {
        self.embed_tokens.weight.val().device()
    }

    /// Number of decoder layers.
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
        precision: Precision::Float32,
        fused_head: true,
    }
}

/// Wraps a host f32 buffer as a parameter.
pub fn param<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}
