//! RMSNorm as one operation: `y = x / rms(x) ⊙ γ` over the last dimension, `rms(x) =
//! √(mean(x²) + ε)`. burn builds it from six tensor ops (square, mean, add, sqrt, divide, multiply),
//! each a single-threaded pass on the CPU backend with its own backward op and saved temporaries.
//! Here, in float32 on the CPU backend:
//! - forward: one row-parallel pass; the mean square is accumulated in f64, and only the per-row
//!   `rms` (one float per row) is kept beside `x` and `γ` for the backward pass;
//! - backward, per row with `r = 1/rms` and `x̂ = x·r`: `dx = r·(γ⊙dy − x̂·mean(x̂⊙γ⊙dy))` and
//!   `dγ = Σ_rows dy⊙x̂`, both in one row-parallel pass. `dγ` is summed in f64 per fixed chunk of
//!   `ROWS_PER_CHUNK` rows and the chunks' partial sums are added in order, so the result does
//!   not depend on how the threads were scheduled.
//!
//! A burn backend extension like [`super::kernels`]; other backends and other dtypes keep burn's
//! ops ([`rms_norm`]'s fallback is burn's `RmsNorm::forward`).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

/// Rows per parallel task; also the fixed grouping of the `dγ` partial sums.
const ROWS_PER_CHUNK: usize = 64;

/// RMSNorm over the last dimension, and its backward pass.
#[backend_extension(Flex, Autodiff)]
pub trait RmsNormOps: Backend {
    /// `x / √(mean_last(x²) + eps) ⊙ gamma`: x `[.., H]`, gamma `[H]`.
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        composed_forward::<Self>(x, gamma, eps).0
    }

    /// The output and the per-row `rms = √(mean_last(x²) + eps)` (`x`'s shape with a last
    /// dimension of 1), which the backward pass needs.
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_forward::<Self>(x, gamma, eps)
    }

    /// The gradients of `x` and of `gamma` (those asked for by `want_x`, `want_gamma`) from the
    /// input, the scale, the per-row `rms` and the output's gradient `dy`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        want_x: bool,
        want_gamma: bool,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        composed_backward::<Self>(x, gamma, rms, dy, want_x, want_gamma)
    }
}

/// `gamma` `[H]` viewed and broadcast as `shape` `[.., H]`.
fn broadcast_gamma<B: Backend>(gamma: FloatTensor<B>, shape: Shape) -> FloatTensor<B> {
    let mut view = vec![1; shape.num_dims()];
    view[shape.num_dims() - 1] = shape[shape.num_dims() - 1];
    B::float_expand(B::float_reshape(gamma, Shape::from(view)), shape)
}

fn composed_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let ms = B::float_mean_dim(B::float_mul(x.clone(), x.clone()), last);
    let rms = B::float_sqrt(B::float_add_scalar(ms, eps.into()));
    let y = B::float_div(x, B::float_expand(rms.clone(), shape.clone()));
    (B::float_mul(y, broadcast_gamma::<B>(gamma, shape)), rms)
}

fn composed_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    rms: FloatTensor<B>,
    dy: FloatTensor<B>,
    want_x: bool,
    want_gamma: bool,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let r = B::float_expand(B::float_recip(rms), shape.clone());
    let xhat = B::float_mul(x, r.clone());
    let dgamma = want_gamma.then(|| {
        let h = shape[last];
        let rows = shape.num_elements() / h.max(1);
        let p = B::float_reshape(B::float_mul(dy.clone(), xhat.clone()), Shape::new([rows, h]));
        B::float_reshape(B::float_sum_dim(p, 0), Shape::new([h]))
    });
    let dx = want_x.then(|| {
        let gdy = B::float_mul(dy, broadcast_gamma::<B>(gamma, shape.clone()));
        let m = B::float_mean_dim(B::float_mul(xhat.clone(), gdy.clone()), last);
        B::float_mul(r, B::float_sub(gdy, B::float_mul(xhat, B::float_expand(m, shape))))
    });
    (dx, dgamma)
}

fn all_f32(t: &[&FloatTensor<Flex>]) -> bool {
    t.iter().all(|t| t.dtype() == DType::F32)
}

/// The row-parallel forward: `y` and the per-row `rms`.
fn flex_forward(x: &[f32], gamma: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let h = gamma.len();
    let mut y = vec![0f32; x.len()];
    let mut rms = vec![0f32; x.len() / h];
    let chunk = ROWS_PER_CHUNK * h;
    y.par_chunks_mut(chunk).zip(rms.par_chunks_mut(ROWS_PER_CHUNK)).zip(x.par_chunks(chunk)).for_each(
        |((yc, rc), xc)| {
            for ((y, r), x) in yc.chunks_mut(h).zip(rc.iter_mut()).zip(xc.chunks(h)) {
                let ss: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                *r = (ss / h as f64 + eps).sqrt() as f32;
                for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                    *y = (x / *r) * g;
                }
            }
        },
    );
    (y, rms)
}

/// The row-parallel backward: `dx` (empty unless `want_x`) and `dγ` (empty unless `want_gamma`).
fn flex_backward(
    x: &[f32],
    gamma: &[f32],
    rms: &[f32],
    dy: &[f32],
    want_x: bool,
    want_gamma: bool,
) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let h = gamma.len();
    let chunk = ROWS_PER_CHUNK * h;
    // One chunk of rows: its rows of dx written into `dxc` when given, its dγ partial sum returned.
    let chunk_pass = |c: usize, mut dxc: Option<&mut [f32]>| -> Vec<f64> {
        let mut part = vec![0f64; if want_gamma { h } else { 0 }];
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(x.len()));
        for (i, (xr, dyr)) in x[start..end].chunks(h).zip(dy[start..end].chunks(h)).enumerate() {
            let r = 1.0 / rms[c * ROWS_PER_CHUNK + i];
            if let Some(dxc) = dxc.as_deref_mut() {
                let s: f64 =
                    xr.iter().zip(dyr).zip(gamma).map(|((&x, &d), &g)| f64::from(x * r) * f64::from(g * d)).sum();
                let m = (s / h as f64) as f32;
                for (((o, &x), &d), &g) in dxc[i * h..(i + 1) * h].iter_mut().zip(xr).zip(dyr).zip(gamma) {
                    *o = r * (g * d - x * r * m);
                }
            }
            for ((p, &x), &d) in part.iter_mut().zip(xr).zip(dyr) {
                *p += f64::from(d * (x * r));
            }
        }
        part
    };
    let mut dx = vec![0f32; if want_x { x.len() } else { 0 }];
    let parts: Vec<Vec<f64>> = if want_x {
        dx.par_chunks_mut(chunk).enumerate().map(|(c, o)| chunk_pass(c, Some(o))).collect()
    } else if want_gamma {
        (0..x.len().div_ceil(chunk)).into_par_iter().map(|c| chunk_pass(c, None)).collect()
    } else {
        Vec::new()
    };
    let mut dgamma = vec![0f64; if want_gamma { h } else { 0 }];
    for part in &parts {
        for (a, p) in dgamma.iter_mut().zip(part) {
            *a += p;
        }
    }
    (dx, dgamma.into_iter().map(|v| v as f32).collect())
}

impl RmsNormOps for Flex {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, gamma, eps).0
    }

    fn rms_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.shape();
        let h = shape[shape.num_dims() - 1];
        if !all_f32(&[&x, &gamma]) || h == 0 || gamma.shape().num_elements() != h {
            return composed_forward::<Flex>(x, gamma, eps);
        }
        let (x, gamma) = (x.to_contiguous(), gamma.to_contiguous());
        let (y, rms) = flex_forward(x.storage(), gamma.storage(), eps);
        let mut rms_shape = shape.clone();
        rms_shape[shape.num_dims() - 1] = 1;
        (FlexTensor::from_data(TensorData::new(y, shape)), FlexTensor::from_data(TensorData::new(rms, rms_shape)))
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        want_x: bool,
        want_gamma: bool,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        let shape = x.shape();
        let h = shape[shape.num_dims() - 1];
        if !all_f32(&[&x, &gamma, &rms, &dy]) || h == 0 || gamma.shape().num_elements() != h {
            return composed_backward::<Flex>(x, gamma, rms, dy, want_x, want_gamma);
        }
        let (x, gamma, rms, dy) = (x.to_contiguous(), gamma.to_contiguous(), rms.to_contiguous(), dy.to_contiguous());
        let (dx, dgamma) = flex_backward(x.storage(), gamma.storage(), rms.storage(), dy.storage(), want_x, want_gamma);
        (
            want_x.then(|| FlexTensor::from_data(TensorData::new(dx, shape))),
            want_gamma.then(|| FlexTensor::from_data(TensorData::new(dgamma, [h]))),
        )
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: Backend + RmsNormOps> Backward<B, 2> for RmsNormBackward {
    /// x, gamma, the per-row rms.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_g] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, rms) = ops.state;
        let (dx, dgamma) = B::rms_norm_backward(x, gamma, rms, dy, node_x.is_some(), node_g.is_some());
        if let (Some(node), Some(d)) = (node_x, dx) {
            grads.register::<B>(node.id, d);
        }
        if let (Some(node), Some(d)) = (node_g, dgamma) {
            grads.register::<B>(node.id, d);
        }
    }
}

impl<B: Backend + RmsNormOps, C: CheckpointStrategy> RmsNormOps for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        match RmsNormBackward.prepare::<C>([x.node(), gamma.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.primitive().clone(), gamma.primitive().clone());
                let (y, rms) = B::rms_norm_forward(x.clone(), gamma.clone(), eps);
                prep.finish((x, gamma, rms), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x.into_primitive(), gamma.into_primitive(), eps)),
        }
    }
}

/// RMSNorm over the last dimension, `x / √(mean(x²) + eps) ⊙ gamma` (x `[.., H]`, gamma `[H]`):
/// one row-parallel operation (forward and backward) on the CPU backend in float32, burn's
/// `RmsNorm::forward` ops elsewhere.
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Tensor<D> {
    if super::head::supported(&x.device()) && x.dtype() == DType::F32 && gamma.dtype() == DType::F32 {
        Tensor::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(x.into_dispatch(), gamma.into_dispatch(), eps))
    } else {
        // burn 0.22.1's `RmsNorm::forward`, verbatim.
        let dtype = x.dtype();
        let rms = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + eps).sqrt();
        (x / rms.cast(dtype)) * gamma.unsqueeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// burn's RMSNorm (the ops of `RmsNorm::forward`).
    fn reference<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Tensor<D> {
        let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
        (x / rms) * gamma.unsqueeze()
    }

    fn max_rel<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-30);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Value and both gradients against burn's ops, for a row count (2 × 99) that is not a multiple
    /// of `ROWS_PER_CHUNK`, with a downstream weighting so every element's gradient differs; then
    /// with only one of the two tracked.
    #[test]
    fn rms_norm_equals_burns_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(11);
        let (b, t, h) = (2, 99, 72);
        let eps = 1e-5;
        let x0 = Tensor::<3>::random([b, t, h], Distribution::Normal(0.0, 2.0), &device);
        let g0 = Tensor::<1>::random([h], Distribution::Normal(1.0, 0.3), &device);
        let w = Tensor::<3>::random([b, t, h], Distribution::Uniform(-1.0, 1.0), &device);

        let (x, g) = (x0.clone().require_grad(), g0.clone().require_grad());
        let y = rms_norm(x.clone(), g.clone(), eps);
        let grads = (y.clone() * w.clone()).sum().backward();
        let (x2, g2) = (x0.clone().require_grad(), g0.clone().require_grad());
        let y2 = reference(x2.clone(), g2.clone(), eps);
        let grads2 = (y2.clone() * w.clone()).sum().backward();

        let (dx, dx2) = (x.grad(&grads).unwrap(), x2.grad(&grads2).unwrap());
        let (dg, dg2) = (g.grad(&grads).unwrap(), g2.grad(&grads2).unwrap());
        let (ey, ex, eg) = (max_rel(y.inner(), y2.inner()), max_rel(dx.clone(), dx2), max_rel(dg.clone(), dg2));
        println!("rms_norm worst relative error: y {ey:e}, dx {ex:e}, dgamma {eg:e}");
        assert!(ey < 1e-6, "y {ey}");
        assert!(ex < 1e-5, "dx {ex}");
        assert!(eg < 1e-5, "dgamma {eg}");

        // gamma frozen: only x's gradient.
        let x3 = x0.clone().require_grad();
        let grads3 = (rms_norm(x3.clone(), g0.clone(), eps) * w.clone()).sum().backward();
        assert_eq!(max_rel(x3.grad(&grads3).unwrap(), dx), 0.0);
        // x a constant: only gamma's gradient.
        let g4 = g0.require_grad();
        let grads4 = (rms_norm(x0, g4.clone(), eps) * w).sum().backward();
        assert_eq!(max_rel(g4.grad(&grads4).unwrap(), dg), 0.0);
    }

    /// The composed fallbacks (what other dtypes take inside the extension), through the extension
    /// in float64 against burn's ops.
    #[test]
    fn rms_norm_composed_fallback_equals_burns() {
        let device = Device::flex().autodiff();
        device.seed(14);
        let f64 = burn::tensor::FloatDType::F64;
        let x0 = Tensor::<3>::random([2, 9, 24], Distribution::Normal(0.0, 2.0), &device).cast(f64);
        let g0 = Tensor::<1>::random([24], Distribution::Normal(1.0, 0.3), &device).cast(f64);
        let w = Tensor::<3>::random([2, 9, 24], Distribution::Uniform(-1.0, 1.0), &device).cast(f64);
        let (x, g) = (x0.clone().require_grad(), g0.clone().require_grad());
        let y = Tensor::<3>::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(
            x.clone().into_dispatch(),
            g.clone().into_dispatch(),
            1e-5,
        ));
        let grads = (y.clone() * w.clone()).sum().backward();
        let (x2, g2) = (x0.require_grad(), g0.require_grad());
        let y2 = reference(x2.clone(), g2.clone(), 1e-5);
        let grads2 = (y2.clone() * w).sum().backward();
        assert!(max_rel(y.inner(), y2.inner()) < 1e-12);
        assert!(max_rel(x.grad(&grads).unwrap(), x2.grad(&grads2).unwrap()) < 1e-12);
        let (dg, dg2) = (g.grad(&grads).unwrap(), g2.grad(&grads2).unwrap());
        assert!(max_rel(dg, dg2) < 1e-12);
    }

    /// Without autodiff, and on a 2-D input of a single row.
    #[test]
    fn rms_norm_without_autodiff_and_on_one_row() {
        let device = Device::flex();
        device.seed(12);
        let x = Tensor::<2>::random([1, 40], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<1>::random([40], Distribution::Normal(1.0, 0.3), &device);
        let e = max_rel(rms_norm(x.clone(), g.clone(), 1e-6), reference(x, g, 1e-6));
        assert!(e < 1e-6, "{e}");
    }
}
