//! Element-wise work on every core, with the backward pass written once instead of differentiated
//! op by op. burn's autodiff builds a softmax out of five tensor ops (max, subtract, exp, sum,
//! divide) and SwiGLU's `silu(g) ⊙ u` out of three, each a single-threaded pass on the CPU backend
//! with its own backward op. Here each is one operation:
//! - the attention softmax: forward through flex's fused, row-parallel softmax; backward
//!   `dx = y ⊙ (dy − Σ dy ⊙ y)` in one row-parallel pass;
//! - SwiGLU: `silu(g) ⊙ u` in one parallel pass; backward `dg = dy ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)))`,
//!   `du = dy ⊙ silu(g)`, one parallel pass each;
//! - RMSNorm ([`super::kernels_norm`]): six ops become one row-parallel pass forward and one
//!   backward (both gradients, `dx` and `dγ`, in it);
//! - RoPE ([`super::kernels_rope`]): a flip, two multiplies and an add become one pass parallel
//!   over positions, forward and backward.
//!
//! Burn backend extensions like [`super::head`] (flex and its autodiff wrapper); other backends
//! and other dtypes keep burn's ops.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};

/// Softmax over the last dimension, and its backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait SoftmaxOps: Backend {
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of the input of a softmax over the last dimension, from its output `y` and the
    /// gradient `dy` of the output: `y ⊙ (dy − Σ_last dy ⊙ y)`.
    fn softmax_last_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_softmax_backward::<Self>(y, dy)
    }
}

fn composed_softmax_backward<B: Backend>(y: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let shape = y.shape();
    let last = shape.num_dims() - 1;
    let s = B::float_sum_dim(B::float_mul(dy.clone(), y.clone()), last);
    B::float_mul(y, B::float_sub(dy, B::float_expand(s, shape)))
}

/// SwiGLU's product `silu(gate) ⊙ up`, and its backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait SwigluOps: Backend {
    /// `silu(gate) ⊙ up`.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(composed_silu::<Self>(gate), up)
    }

    /// The gate's gradient: `dy ⊙ up ⊙ σ(g)(1 + g(1 − σ(g)))`.
    fn swiglu_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_swiglu_backward_gate::<Self>(gate, up, dy)
    }

    /// The up projection's gradient: `dy ⊙ silu(gate)`.
    fn swiglu_backward_up(gate: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(dy, composed_silu::<Self>(gate))
    }
}

fn composed_silu<B: Backend>(gate: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(gate.clone(), B::sigmoid(gate))
}

fn composed_swiglu_backward_gate<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let s = B::sigmoid(gate.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1f32.into());
    let d = B::float_mul(s, B::float_add_scalar(B::float_mul(gate, one_minus), 1f32.into()));
    B::float_mul(B::float_mul(dy, up), d)
}

/// `f` over the elements of equal-shaped float32 tensors, in parallel, into a new tensor.
fn zip_map<const N: usize>(inputs: [FloatTensor<Flex>; N], f: impl Fn([f32; N]) -> f32 + Sync) -> FloatTensor<Flex> {
    use rayon::prelude::*;
    let shape = inputs[0].shape();
    let inputs = inputs.map(|t| t.to_contiguous());
    let slices: Vec<&[f32]> = inputs.iter().map(|t| t.storage::<f32>()).collect();
    let n = slices[0].len();
    let mut out = vec![0f32; n];
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let base = c * CHUNK;
        for (i, o) in o.iter_mut().enumerate() {
            *o = f(std::array::from_fn(|k| slices[k][base + i]));
        }
    });
    FlexTensor::from_data(TensorData::new(out, shape))
}

fn all_f32<const N: usize>(t: &[FloatTensor<Flex>; N]) -> bool {
    let shape = t[0].shape();
    t.iter().all(|t| t.dtype() == DType::F32 && t.shape() == shape)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl SwigluOps for Flex {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let t = [gate, up];
        if !all_f32(&t) {
            let [gate, up] = t;
            return Flex::float_mul(composed_silu::<Flex>(gate), up);
        }
        zip_map(t, |[g, u]| g * sigmoid(g) * u)
    }

    fn swiglu_backward_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let t = [gate, up, dy];
        if !all_f32(&t) {
            let [gate, up, dy] = t;
            return composed_swiglu_backward_gate::<Flex>(gate, up, dy);
        }
        zip_map(t, |[g, u, d]| {
            let s = sigmoid(g);
            d * u * s * (1.0 + g * (1.0 - s))
        })
    }

    fn swiglu_backward_up(gate: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let t = [gate, dy];
        if !all_f32(&t) {
            let [gate, dy] = t;
            return Flex::float_mul(dy, composed_silu::<Flex>(gate));
        }
        zip_map(t, |[g, d]| d * g * sigmoid(g))
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: Backend + SwigluOps> Backward<B, 2> for SwigluBackward {
    /// gate, up.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        if let Some(node) = node_u {
            grads.register::<B>(node.id, B::swiglu_backward_up(gate.clone(), dy.clone()));
        }
        if let Some(node) = node_g {
            grads.register::<B>(node.id, B::swiglu_backward_gate(gate, up, dy));
        }
    }
}

impl<B: Backend + SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward.prepare::<C>([gate.node(), up.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (g, u) = (gate.primitive().clone(), up.primitive().clone());
                let y = B::swiglu(g.clone(), u.clone());
                prep.finish((g, u), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate.into_primitive(), up.into_primitive())),
        }
    }
}

/// `silu(gate) ⊙ up`: one parallel operation (forward and backward) on the CPU backend in float32,
/// burn's ops elsewhere.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if super::head::supported(&gate.device()) && gate.dtype() == DType::F32 && up.dtype() == DType::F32 {
        Tensor::from_dispatch(<Dispatch as SwigluOps>::swiglu(gate.into_dispatch(), up.into_dispatch()))
    } else {
        burn::tensor::activation::silu(gate) * up
    }
}

impl SoftmaxOps for Flex {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        <Flex as ActivationOps<Flex>>::softmax(x, last)
    }

    fn softmax_last_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if y.dtype() != DType::F32 || dy.dtype() != DType::F32 {
            return composed_softmax_backward::<Flex>(y, dy);
        }
        let (y, dy) = (y.to_contiguous(), dy.to_contiguous());
        let shape = y.shape();
        let row = shape[shape.num_dims() - 1];
        let (ys, ds): (&[f32], &[f32]) = (y.storage(), dy.storage());
        let mut out = vec![0f32; ys.len()];
        if row > 0 {
            use rayon::prelude::*;
            let chunk = 64 * row;
            out.par_chunks_mut(chunk).zip(ys.par_chunks(chunk).zip(ds.par_chunks(chunk))).for_each(|(o, (yc, dc))| {
                for ((o, y), d) in o.chunks_mut(row).zip(yc.chunks(row)).zip(dc.chunks(row)) {
                    let s = y.iter().zip(d).map(|(a, b)| f64::from(a * b)).sum::<f64>() as f32;
                    for ((o, &y), &d) in o.iter_mut().zip(y).zip(d) {
                        *o = y * (d - s);
                    }
                }
            });
        }
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend + SoftmaxOps> Backward<B, 1> for SoftmaxBackward {
    /// The softmax's output.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::softmax_last_backward(ops.state, dy));
        }
    }
}

impl<B: Backend + SoftmaxOps, C: CheckpointStrategy> SoftmaxOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::softmax_last(x.primitive().clone());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_last(x.into_primitive())),
        }
    }
}

/// Softmax over the last dimension: one row-parallel operation (forward and backward) on the CPU
/// backend, burn's softmax elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if super::head::supported(&x.device()) {
        Tensor::from_dispatch(<Dispatch as SoftmaxOps>::softmax_last(x.into_dispatch()))
    } else {
        burn::tensor::activation::softmax(x, D - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    #[test]
    fn swiglu_equals_burns_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let g0 = Tensor::<3>::random([2, 37, 50], Distribution::Normal(0.0, 2.0), &device);
        let u0 = Tensor::<3>::random([2, 37, 50], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<3>::random([2, 37, 50], Distribution::Uniform(-1.0, 1.0), &device);
        let (g, u) = (g0.clone().require_grad(), u0.clone().require_grad());
        let y = swiglu(g.clone(), u.clone());
        let grads = (y.clone() * w.clone()).sum().backward();
        let (g2, u2) = (g0.require_grad(), u0.require_grad());
        let y2 = burn::tensor::activation::silu(g2.clone()) * u2.clone();
        let grads2 = (y2.clone() * w).sum().backward();
        let rel = |a: Tensor<3>, b: Tensor<3>| {
            (a - b.clone()).abs().max().into_scalar::<f32>() / b.abs().max().into_scalar::<f32>()
        };
        assert!(rel(y.inner(), y2.inner()) < 1e-6);
        assert!(rel(g.grad(&grads).unwrap(), g2.grad(&grads2).unwrap()) < 1e-5);
        assert!(rel(u.grad(&grads).unwrap(), u2.grad(&grads2).unwrap()) < 1e-5);
    }

    #[test]
    fn softmax_equals_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let x0 = Tensor::<4>::random([2, 3, 70, 33], Distribution::Normal(0.0, 3.0), &device);
        let w = Tensor::<4>::random([2, 3, 70, 33], Distribution::Uniform(-1.0, 1.0), &device);
        let x = x0.clone().require_grad();
        let y = softmax_last(x.clone());
        let g = (y.clone() * w.clone()).sum().backward();
        let x2 = x0.require_grad();
        let y2 = burn::tensor::activation::softmax(x2.clone(), 3);
        let g2 = (y2.clone() * w).sum().backward();
        let diff = |a: Tensor<4>, b: Tensor<4>| (a - b).abs().max().into_scalar::<f32>();
        assert!(diff(y.inner(), y2.inner()) < 1e-6);
        let (dx, dx2) = (x.grad(&g).unwrap(), x2.grad(&g2).unwrap());
        let scale = dx2.clone().abs().max().into_scalar::<f32>();
        assert!(diff(dx, dx2) <= 1e-5 * scale);
    }
}
