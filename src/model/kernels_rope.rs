//! Rotary position embeddings as one operation: `y = x·cos + rotate_half(x)·sin` for `x`
//! `[B, T, H, D]` and tables `[B, T, 1, D]` ([`super::rope::Rope::tables`]; the sin table carries
//! rotate-half's sign). burn builds it from a flip, two multiplies and an add, each a
//! single-threaded pass on the CPU backend; here, in float32 on the CPU backend, it is one pass
//! parallel over the `(b, t)` rows. With halves 1 and 2 of each head (`s₁ = −sin θ`, `s₂ = sin θ`
//! as the table stores them):
//! - forward: `y₁ = x₁c₁ + x₂s₁`, `y₂ = x₂c₂ + x₁s₂`;
//! - backward (the transpose; only `x` has a gradient, the tables are constants):
//!   `dx₁ = dy₁c₁ + dy₂s₂`, `dx₂ = dy₂c₂ + dy₁s₁`.
//!
//! Both are the composed path's products and sums in the same order, so the results are identical
//! to it, not merely close. A burn backend extension like [`super::kernels`]; other backends and
//! dtypes keep burn's ops ([`super::rope::apply_rope`]).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

/// Elements per parallel task (whole `(b, t)` rows of `H·D` elements, at least one).
const CHUNK: usize = 1 << 14;

/// RoPE on `[B, T, H, D]` with `[B, T, 1, D]` tables, and its backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait RopeOps: Backend {
    /// `x·cos + rotate_half(x)·sin`, rotate_half's sign in `sin`. The tables' first two dimensions
    /// are `x`'s or 1 (broadcast).
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::<Self>(x, cos, sin, false)
    }

    /// The gradient of `x` from the output's gradient `dy`: `dy·cos + rotate_halfᵀ(dy·sin)`.
    fn rope_backward(dy: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::<Self>(dy, cos, sin, true)
    }
}

/// The composed path on a `[B, T, H, 2, D/2]` view, where swapping the halves is a flip: forward
/// `x·cos + flip(x)·sin`, backward (`transpose`) `x·cos + flip(x·sin)`.
fn composed<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    transpose: bool,
) -> FloatTensor<B> {
    let shape = x.shape();
    let [b, t, h, d] = shape.dims();
    let view = Shape::new([b, t, h, 2, d / 2]);
    let table = |c: FloatTensor<B>| {
        let [bc, tc, _, _] = c.shape().dims();
        B::float_expand(B::float_reshape(c, Shape::new([bc, tc, 1, 2, d / 2])), view.clone())
    };
    let (x, cos, sin) = (B::float_reshape(x, view.clone()), table(cos), table(sin));
    let rotated = if transpose {
        B::float_flip(B::float_mul(x.clone(), sin), &[3])
    } else {
        B::float_mul(B::float_flip(x.clone(), &[3]), sin)
    };
    B::float_reshape(B::float_add(B::float_mul(x, cos), rotated), shape)
}

/// The row-parallel pass over contiguous `x` `[b, t, h, d]` and tables `[bc, tc, 1, d]`.
fn flex_pass(x: &[f32], cos: &[f32], sin: &[f32], [t, h, d, bc, tc]: [usize; 5], transpose: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let (row, half) = (h * d, d / 2);
    let mut out = vec![0f32; x.len()];
    let rows_per_chunk = (CHUNK / row).max(1);
    out.par_chunks_mut(rows_per_chunk * row).zip(x.par_chunks(rows_per_chunk * row)).enumerate().for_each(
        |(c, (oc, xc))| {
            for (i, (o, x)) in oc.chunks_mut(row).zip(xc.chunks(row)).enumerate() {
                let r = c * rows_per_chunk + i; // b·t + t
                let (bi, ti) = (r / t, r % t);
                let tr = (if bc == 1 { 0 } else { bi } * tc + if tc == 1 { 0 } else { ti }) * d;
                let (c1, c2) = cos[tr..tr + d].split_at(half);
                let (s1, s2) = sin[tr..tr + d].split_at(half);
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let (o1, o2) = o.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    for j in 0..half {
                        let (a, b) = (x1[j], x2[j]);
                        if transpose {
                            o1[j] = a * c1[j] + b * s2[j];
                            o2[j] = b * c2[j] + a * s1[j];
                        } else {
                            o1[j] = a * c1[j] + b * s1[j];
                            o2[j] = b * c2[j] + a * s2[j];
                        }
                    }
                }
            }
        },
    );
    out
}

/// The fast path on flex: float32, `x` four-dimensional with an even last dimension, tables
/// `[1 or B, 1 or T, 1, D]` of one shape. `None` where it does not apply.
fn flex_rope(
    x: &FloatTensor<Flex>,
    cos: &FloatTensor<Flex>,
    sin: &FloatTensor<Flex>,
    transpose: bool,
) -> Option<FloatTensor<Flex>> {
    let shape = x.shape();
    let table = cos.shape();
    if [x, cos, sin].iter().any(|t| t.dtype() != DType::F32) || shape.num_dims() != 4 || table != sin.shape() {
        return None;
    }
    let [b, t, h, d] = shape.dims();
    if table.num_dims() != 4 || d % 2 != 0 || h * d == 0 {
        return None;
    }
    let [bc, tc, one, dc] = table.dims();
    if !(bc == 1 || bc == b) || !(tc == 1 || tc == t) || one != 1 || dc != d {
        return None;
    }
    let (x, cos, sin) = (x.to_contiguous(), cos.to_contiguous(), sin.to_contiguous());
    let out = flex_pass(x.storage(), cos.storage(), sin.storage(), [t, h, d, bc, tc], transpose);
    Some(FlexTensor::from_data(TensorData::new(out, shape)))
}

impl RopeOps for Flex {
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_rope(&x, &cos, &sin, false).unwrap_or_else(|| composed::<Flex>(x, cos, sin, false))
    }

    fn rope_backward(dy: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_rope(&dy, &cos, &sin, true).unwrap_or_else(|| composed::<Flex>(dy, cos, sin, true))
    }
}

#[derive(Debug)]
struct RopeBackward;

impl<B: Backend + RopeOps> Backward<B, 1> for RopeBackward {
    /// The cos and sin tables.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (cos, sin) = ops.state;
            grads.register::<B>(node.id, B::rope_backward(dy, cos, sin));
        }
    }
}

impl<B: Backend + RopeOps, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    /// Differentiable in `x` only: the tables are constants (a gradient reaching them is dropped).
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match RopeBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::rope(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x.into_primitive(), cos, sin)),
        }
    }
}

/// `x·cos + rotate_half(x)·sin` for `x: [B, T, H, D]` with tables `[B, T, 1, D]` that are
/// constants, on a device where [`super::head::supported`] holds: one parallel pass forward and
/// backward in float32 (other dtypes take the composed ops inside the extension).
/// [`super::rope::apply_rope`] calls it where it applies and keeps burn's ops elsewhere.
pub fn rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RopeOps>::rope(x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rope::Rope;
    use burn::tensor::{Device, Distribution};

    /// The composed path on tensors (`apply_rope`'s burn ops).
    fn reference(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
        let [b, t, h, d] = x.dims();
        let tc = cos.dims()[1];
        let x = x.reshape([b, t, h, 2, d / 2]);
        let cos = cos.reshape([b, tc, 1, 2, d / 2]);
        let sin = sin.reshape([b, tc, 1, 2, d / 2]);
        (x.clone() * cos + x.flip([3]) * sin).reshape([b, t, h, d])
    }

    fn max_rel(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-30);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Value and gradient against burn's ops on a non-contiguous input (a permuted projection, as
    /// attention's), with more rows than one parallel task holds and a ragged last task, and with
    /// tables of one position broadcast over `T` (the KV-cache step has `T = 1` and tables to match;
    /// broadcasting is the general case).
    #[test]
    fn rope_equals_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        device.seed(13);
        let rope_tables = Rope::new(16, 10_000.0);
        for (b, t, tc) in [(3, 171, 171), (2, 5, 1)] {
            let (h, d) = (7, 16);
            let positions: Vec<i64> = (0..b * tc).map(|i| (i * 7 % 300) as i64).collect();
            let (cos, sin) = rope_tables.tables(&positions, b, tc, &device);
            let x0 = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<4>::random([b, t, h, d], Distribution::Uniform(-1.0, 1.0), &device);

            let x = x0.clone().require_grad();
            let y = rope(x.clone().swap_dims(1, 2), cos.clone(), sin.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            let x2 = x0.require_grad();
            let y2 = reference(x2.clone().swap_dims(1, 2), cos, sin);
            let grads2 = (y2.clone() * w).sum().backward();

            let (ey, ex) =
                (max_rel(y.inner(), y2.inner()), max_rel(x.grad(&grads).unwrap(), x2.grad(&grads2).unwrap()));
            println!("rope [{b}, {t}, {h}, {d}], table T {tc}: worst relative error y {ey:e}, dx {ex:e}");
            assert!(ey <= 1e-6, "y {ey}");
            assert!(ex <= 1e-5, "dx {ex}");
        }
    }

    /// The composed fallback (what other dtypes take inside the extension), in float64.
    #[test]
    fn rope_composed_fallback_equals_burns() {
        let device = Device::flex().autodiff();
        device.seed(15);
        let f64 = burn::tensor::FloatDType::F64;
        let (cos, sin) = Rope::new(8, 10_000.0).tables(&[3, 9, 4, 1, 0, 7], 2, 3, &device);
        let (cos, sin) = (cos.cast(f64), sin.cast(f64));
        let x0 = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), &device).cast(f64);
        let w = Tensor::<4>::random([2, 3, 5, 8], Distribution::Uniform(-1.0, 1.0), &device).cast(f64);
        let x = x0.clone().require_grad();
        let y = rope(x.clone(), cos.clone(), sin.clone());
        let grads = (y.clone() * w.clone()).sum().backward();
        let x2 = x0.require_grad();
        let y2 = reference(x2.clone(), cos, sin);
        let grads2 = (y2.clone() * w).sum().backward();
        assert_eq!(max_rel(y.inner(), y2.inner()), 0.0);
        assert_eq!(max_rel(x.grad(&grads).unwrap(), x2.grad(&grads2).unwrap()), 0.0);
    }
}
