//! The log-prob head, fused: for each scored position `i`, `log softmax(hᵢ · Wᵀ)[tᵢ]`, computed a
//! chunk of rows at a time ([`chunk_rows`]: about 16 M logits, 341 rows for SmolLM2's 49,152-token
//! vocabulary) so that the `[N × V]` logits, their softmax and its gradient never exist whole.
//!
//! The backward pass is written by hand: from the upstream gradient `gᵢ` of each log-prob it
//! recomputes a chunk's softmax `pᵢ` and forms `dzᵢ = gᵢ (onehot(tᵢ) − pᵢ)`, then `dh = dz · W` and
//! `dW += dzᵀ · h`. Autodiff keeps only `h` and `W` (no logits) between the passes.
//!
//! It is a burn backend extension (burn 0.22's `#[backend_extension]`) for the CPU backend (`flex`)
//! and its autodiff wrapper; on other backends, or in bfloat16, [`crate::model::CausalLm`] keeps the
//! unfused path (logits → log-softmax → gather). Exactness against that path: tests below and every
//! golden test, which run through it on the CPU.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DType, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Device, IndexingUpdateOp, Int, Shape, Slice, Tensor, TensorData};

/// Logits per chunk: 2²⁴ floats (64 MiB). Fewer, larger chunks keep the matmuls efficient and the
/// weight gradient's per-chunk accumulation (a `[V × H]` add) rare.
const CHUNK_LOGITS: usize = 1 << 24;

/// Rows per chunk for a vocabulary of `v`.
pub fn chunk_rows(v: usize) -> usize {
    (CHUNK_LOGITS / v.max(1)).max(1)
}

/// The fused head as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait TargetLogpOps: Backend {
    /// `log softmax(hidden · weightᵀ)[targets]` per row: hidden `[N, H]`, weight `[V, H]`,
    /// targets `[N]` → `[N]`, `chunk` rows at a time.
    fn target_logp(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;

    /// One chunk's log-probs `[c, 1]` from its logits `z` `[c, V]` and targets `[c, 1]`.
    fn chunk_logp(z: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        composed_chunk_logp::<Self>(z, targets)
    }

    /// One chunk's logit gradient `g ⊙ (onehot(t) − softmax(z))` `[c, V]` from its logits, targets
    /// `[c, 1]` and the upstream gradient `g` `[c, 1]`.
    fn chunk_dlogits(z: FloatTensor<Self>, targets: IntTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_chunk_dlogits::<Self>(z, targets, g)
    }
}

fn composed_chunk_logp<B: Backend>(z: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    let (zm, lse) = shift::<B>(z);
    B::float_sub(B::float_gather(1, zm, targets), lse)
}

fn composed_chunk_dlogits<B: Backend>(z: FloatTensor<B>, targets: IntTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
    let (zm, lse) = shift::<B>(z);
    let shape = zm.shape();
    let p = B::float_exp(B::float_sub(zm, B::float_expand(lse, shape.clone()))); // softmax
    let dz = B::float_neg(B::float_mul(p, B::float_expand(g.clone(), shape)));
    B::float_scatter(1, dz, targets, g, IndexingUpdateOp::Add)
}

/// A chunk's shifted logits `z − max z` `[c, V]` and `log Σ exp(z − max z)` `[c, 1]`.
fn shift<B: Backend>(z: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let shape = z.shape();
    let m = B::float_max_dim(z.clone(), 1); // [c, 1]
    let zm = B::float_sub(z, B::float_expand(m, shape));
    let lse = B::float_log(B::float_sum_dim(B::float_exp(zm.clone()), 1));
    (zm, lse)
}

/// The chunk's targets as plain indices (Flex stores ids as i64 or i32).
fn flex_targets(t: &IntTensor<Flex>) -> Option<Vec<usize>> {
    let t = t.to_contiguous();
    match t.dtype() {
        DType::I64 => Some(t.storage::<i64>().iter().map(|&x| x as usize).collect()),
        DType::I32 => Some(t.storage::<i32>().iter().map(|&x| x as usize).collect()),
        _ => None,
    }
}

/// Row max and `log Σ exp(row − max)`, the sum accumulated in f64 (a vocabulary-long f32 sum
/// drifts by ~1e-4 in the log-prob).
fn row_lse(row: &[f32]) -> (f32, f32) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f64 = row.iter().map(|&x| f64::from((x - m).exp())).sum();
    (m, s.ln() as f32)
}

impl TargetLogpOps for Flex {
    /// Row-parallel: max, log-sum-exp and the target's logit in one pass per row.
    fn chunk_logp(z: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let Some(t) = flex_targets(&targets).filter(|_| z.dtype() == DType::F32) else {
            return composed_chunk_logp::<Flex>(z, targets);
        };
        use rayon::prelude::*;
        let z = z.to_contiguous();
        let v = z.shape()[1];
        let out: Vec<f32> = z
            .storage::<f32>()
            .par_chunks(v)
            .zip(t.par_iter())
            .map(|(row, &t)| {
                let (m, lse) = row_lse(row);
                row[t] - m - lse
            })
            .collect();
        let c = out.len();
        FlexTensor::from_data(TensorData::new(out, [c, 1]))
    }

    /// Row-parallel, in place on the logits: `g (onehot(t) − softmax(z))`.
    fn chunk_dlogits(z: FloatTensor<Self>, targets: IntTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(t) = flex_targets(&targets).filter(|_| z.dtype() == DType::F32 && g.dtype() == DType::F32) else {
            return composed_chunk_dlogits::<Flex>(z, targets, g);
        };
        use rayon::prelude::*;
        let g = g.to_contiguous();
        let gs: &[f32] = g.storage();
        let mut z = z.to_contiguous();
        let v = z.shape()[1];
        z.storage_mut::<f32>().par_chunks_mut(v).zip(t.par_iter().zip(gs.par_iter())).for_each(|(row, (&t, &g))| {
            let (m, lse) = row_lse(row);
            for x in row.iter_mut() {
                *x = -g * (*x - m - lse).exp();
            }
            row[t] += g;
        });
        z
    }

    fn target_logp(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        forward::<Flex>(hidden, weight, targets, chunk)
    }
}

/// Whether the fused head runs on `device` (the CPU backend; autodiff or not).
pub fn supported(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// `log softmax(hidden · weightᵀ)[targets]` per row, differentiable in `hidden` and `weight`
/// (float32; a device where [`supported`] holds).
pub fn target_logps(hidden: Tensor<2>, weight: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let chunk = chunk_rows(weight.dims()[0]);
    target_logps_in_chunks(hidden, weight, targets, chunk)
}

/// [`target_logps`], `chunk` rows at a time.
pub fn target_logps_in_chunks(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as TargetLogpOps>::target_logp(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        targets.into_dispatch(),
        chunk.max(1),
    ))
}

fn rows<B: Backend>(t: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    let cols = t.shape()[1];
    B::float_slice(t, &[Slice::from(start..end), Slice::from(0..cols)])
}

/// The chunk's targets as `[c, 1]` indices.
fn target_rows<B: Backend>(t: &IntTensor<B>, start: usize, end: usize) -> IntTensor<B> {
    B::int_reshape(B::int_slice(t.clone(), &[Slice::from(start..end)]), Shape::new([end - start, 1]))
}

fn forward<B: Backend + TargetLogpOps>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk: usize,
) -> FloatTensor<B> {
    let n = hidden.shape()[0];
    let w_t = B::float_transpose(weight); // [H, V]
    let mut out = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let z = B::float_matmul(rows::<B>(hidden.clone(), start, end), w_t.clone()); // [c, V]
        out.push(B::chunk_logp(z, target_rows::<B>(&targets, start, end))); // [c, 1]
    }
    if out.is_empty() {
        return B::float_reshape(B::float_slice(hidden, &[Slice::from(0..0), Slice::from(0..1)]), Shape::new([0]));
    }
    B::float_reshape(B::float_cat(out, 0), Shape::new([n]))
}

#[derive(Debug)]
struct TargetLogpBackward;

impl<B: Backend + TargetLogpOps> Backward<B, 2> for TargetLogpBackward {
    /// hidden `[N, H]`, weight `[V, H]`, targets `[N]`, rows per chunk.
    type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_h, node_w] = ops.parents;
        let g = grads.consume::<B>(&ops.node); // [N]
        let (hidden, weight, targets, chunk) = ops.state;
        let n = hidden.shape()[0];
        let w_t = B::float_transpose(weight.clone());
        let g = B::float_reshape(g, Shape::new([n, 1]));
        let mut dh = Vec::with_capacity(n.div_ceil(chunk));
        let mut dw: Option<FloatTensor<B>> = None;
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let h = rows::<B>(hidden.clone(), start, end);
            let z = B::float_matmul(h.clone(), w_t.clone()); // [c, V], recomputed
            let gc = rows::<B>(g.clone(), start, end); // [c, 1]
            let dz = B::chunk_dlogits(z, target_rows::<B>(&targets, start, end), gc); // g (onehot(t) − p)
            if node_h.is_some() {
                dh.push(B::float_matmul(dz.clone(), weight.clone())); // [c, H]
            }
            if node_w.is_some() {
                let part = B::float_matmul(B::float_transpose(dz), h); // [V, H]
                dw = Some(match dw {
                    Some(acc) => B::float_add(acc, part),
                    None => part,
                });
            }
        }
        if let Some(node) = node_h {
            let d = if dh.is_empty() { B::float_mul_scalar(hidden, 0f32.into()) } else { B::float_cat(dh, 0) };
            grads.register::<B>(node.id, d);
        }
        if let Some(node) = node_w {
            let d = dw.unwrap_or_else(|| B::float_mul_scalar(weight, 0f32.into()));
            grads.register::<B>(node.id, d);
        }
    }
}

impl<B: Backend + TargetLogpOps, C: CheckpointStrategy> TargetLogpOps for Autodiff<B, C> {
    fn target_logp(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        match TargetLogpBackward.prepare::<C>([hidden.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (h, w) = (hidden.primitive().clone(), weight.primitive().clone());
                let out = B::target_logp(h.clone(), w.clone(), targets.clone(), chunk);
                prep.finish((h, w, targets, chunk), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::target_logp(hidden.into_primitive(), weight.into_primitive(), targets, chunk))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, TensorData};

    fn max_rel(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Fused against logits → log-softmax → gather: values and both gradients, over several chunks
    /// and a ragged last one, with a downstream weighting so every row's upstream gradient differs.
    #[test]
    fn fused_head_equals_the_unfused_path_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let chunk = 64;
        let (n, hdim, v) = (2 * chunk + 5, 24, 301);
        let h0 = Tensor::<2>::random([n, hdim], Distribution::Normal(0.0, 1.0), &device);
        let w0 = Tensor::<2>::random([v, hdim], Distribution::Normal(0.0, 0.5), &device);
        let t: Vec<i64> = (0..n).map(|i| ((i * 37 + 11) % v) as i64).collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(t.clone(), [n]), &device);
        let weights = Tensor::<1>::random([n], Distribution::Uniform(-1.0, 2.0), &device);

        let (h, w) = (h0.clone().require_grad(), w0.clone().require_grad());
        let fused = target_logps_in_chunks(h.clone(), w.clone(), targets.clone(), chunk);
        let g = (fused.clone() * weights.clone()).sum().backward();
        let (dh, dw) = (h.grad(&g).unwrap(), w.grad(&g).unwrap());

        let (h2, w2) = (h0.require_grad(), w0.require_grad());
        let logp = log_softmax(h2.clone().matmul(w2.clone().transpose()), 1);
        let plain = logp.gather(1, targets.reshape([n, 1])).reshape([n]);
        let g2 = (plain.clone() * weights).sum().backward();
        let (dh2, dw2) = (h2.grad(&g2).unwrap(), w2.grad(&g2).unwrap());

        assert!(max_rel(fused.inner().reshape([n, 1]), plain.inner().reshape([n, 1])) < 1e-5);
        assert!(max_rel(dh.clone(), dh2.clone()) < 1e-5, "d hidden {}", max_rel(dh, dh2));
        assert!(max_rel(dw.clone(), dw2.clone()) < 1e-5, "d weight {}", max_rel(dw, dw2));
    }

    #[test]
    fn the_cpu_backend_is_supported_with_and_without_autodiff() {
        assert!(supported(&Device::flex()));
        assert!(supported(&Device::flex().autodiff()));
    }

    #[test]
    fn no_rows_give_no_log_probs_and_zero_gradients() {
        let device = Device::flex().autodiff();
        let h = Tensor::<2>::zeros([0, 4], &device).require_grad();
        let w = Tensor::<2>::ones([5, 4], &device).require_grad();
        let t = Tensor::<1, Int>::zeros([0], &device);
        let out = target_logps(h, w.clone(), t);
        assert_eq!(out.dims(), [0]);
    }
}
