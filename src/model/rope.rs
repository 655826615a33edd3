//! Rotary position embeddings, Hugging Face convention ("rotate half"): the first and second halves
//! of each head are the two coordinates of each rotated pair. (burn's bundled RoPE pairs
//! neighbouring dimensions instead, which is a different model.)

use burn::tensor::{Device, Tensor, TensorData};

/// Precomputed inverse frequencies `θ^(-2i/d)` for one head size.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// Inverse frequencies for heads of width `head_dim` and base `theta`, computed as transformers does.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        // transformers computes inv_freq in float32 from an int64 arange: 1 / theta^(2i/d).
        let inv_freq = (0..head_dim / 2).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        Rope { inv_freq, head_dim }
    }

    /// cos and sin tables `[B, T, 1, head_dim]` for position ids given row-major as `[B, T]`: cos is
    /// `[cos θ | cos θ]`, sin carries rotate-half's sign, `[−sin θ | sin θ]` (see [`apply_rope`]).
    pub fn tables(&self, positions: &[i64], b: usize, t: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let d = self.head_dim;
        let half = d / 2;
        let mut cos = vec![0f32; b * t * d];
        let mut sin = vec![0f32; b * t * d];
        for (row, &p) in positions.iter().enumerate() {
            let base = row * d;
            for (i, &f) in self.inv_freq.iter().enumerate() {
                // float32 product as in transformers (freqs = pos.float() @ inv_freq.float()).
                let angle = (p as f32) * f;
                let (s, c) = angle.sin_cos();
                cos[base + i] = c;
                cos[base + half + i] = c;
                sin[base + i] = -s;
                sin[base + half + i] = s;
            }
        }
        let cos = Tensor::from_data(TensorData::new(cos, [b, t, 1, d]), device);
        let sin = Tensor::from_data(TensorData::new(sin, [b, t, 1, d]), device);
        (cos, sin)
    }
}

/// `x·cos + rotate_half(x)·sin` for `x: [B, T, H, D]` and tables `[B, T, 1, D]` from
/// [`Rope::tables`]. rotate_half(x) = `[−x₂ | x₁]`; the sign lives in the sin table, and swapping
/// the halves is a flip of a `[…, 2, D/2]` view (no copy, no concatenation). In float32 on the CPU
/// this is one parallel operation ([`super::kernels_rope`]); the tables are constants there.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let is_f32 = |t: &Tensor<4>| t.dtype() == burn::tensor::DType::F32;
    if super::head::supported(&x.device()) && is_f32(&x) && is_f32(cos) && is_f32(sin) {
        return super::kernels_rope::rope(x, cos.clone(), sin.clone());
    }
    let [b, t, h, d] = x.dims();
    let x = x.reshape([b, t, h, 2, d / 2]);
    let tc = cos.dims()[1];
    let dt = burn::tensor::FloatDType::from(x.dtype());
    let cos = cos.clone().cast(dt).reshape([b, tc, 1, 2, d / 2]);
    let sin = sin.clone().cast(dt).reshape([b, tc, 1, 2, d / 2]);
    (x.clone() * cos + x.flip([3]) * sin).reshape([b, t, h, d])
}
