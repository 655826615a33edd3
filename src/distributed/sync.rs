//! Everything ranks exchange during a data-parallel run, each through one [`Collective`] call:
//! - the gradients, summed before the optimiser step ([`all_reduce_grads`]: one flat f32 tensor,
//!   one all-reduce);
//! - the metrics' (sum, count) pairs ([`gather_metrics`]) and token counts ([`sum`]);
//! - whether any rank met a non-finite loss ([`any`]), so all skip the same step;
//! - the reference cache's new entries ([`gather_pairs`]);
//! - a check that every rank starts from the same weights ([`check_same_weights`]).
//!
//! With one rank every function returns its input without copying anything (the gradients too,
//! unless the engine asks to run its device collective anyway: a one-GPU NCCL group, to check it).

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, FloatDType, Tensor};
use sha2::{Digest, Sha256};

use super::Collective;
use crate::losses::Metrics;
use crate::model::CausalLm;

/// A trainable parameter: id, shape, dtype.
struct Trainable {
    id: ParamId,
    shape: Vec<usize>,
    dtype: DType,
}

struct Visit(Vec<Trainable>);

impl ModuleVisitor for Visit {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if p.is_require_grad() {
            self.0.push(Trainable { id: p.id, shape: p.shape().dims::<D>().to_vec(), dtype: p.dtype() });
        }
    }
}

fn flat_grad(g: &GradientsParams, p: &Trainable) -> Option<Tensor<1>> {
    let n = p.shape.iter().product::<usize>();
    let flat = |t: Option<Tensor<1>>| t.map(|t| t.cast(FloatDType::F32));
    match p.shape.len() {
        1 => flat(g.get::<1>(p.id)),
        2 => flat(g.get::<2>(p.id).map(|t| t.reshape([n]))),
        3 => flat(g.get::<3>(p.id).map(|t| t.reshape([n]))),
        4 => flat(g.get::<4>(p.id).map(|t| t.reshape([n]))),
        d => panic!("a parameter of rank {d}"),
    }
}

fn put_grad(g: &mut GradientsParams, p: &Trainable, t: Tensor<1>) {
    let t = t.cast(p.dtype);
    let s = &p.shape;
    match s.len() {
        1 => g.register::<1>(p.id, t),
        2 => g.register::<2>(p.id, t.reshape([s[0], s[1]])),
        3 => g.register::<3>(p.id, t.reshape([s[0], s[1], s[2]])),
        4 => g.register::<4>(p.id, t.reshape([s[0], s[1], s[2], s[3]])),
        d => panic!("a parameter of rank {d}"),
    }
}

/// Sums every trainable parameter's gradient over ranks, in place. A rank without a gradient for
/// a parameter (an empty shard) contributes zeros; a parameter no rank has a gradient for stays
/// without one, as on a single rank (so AdamW skips it the same way).
///
/// The gradients are summed as one flat f32 tensor ([`Collective::all_reduce_tensor`]: through host
/// memory, one copy each way, or device to device with NCCL); which parameters have a gradient is
/// summed on the host beside it.
pub fn all_reduce_grads(comm: &dyn Collective, grads: &mut GradientsParams, model: &CausalLm) {
    if comm.is_trivial() {
        return;
    }
    let mut v = Visit(Vec::new());
    model.visit(&mut v);
    let params = v.0;
    let device = model.device();
    let mut present = Vec::with_capacity(params.len());
    let parts: Vec<Tensor<1>> = params
        .iter()
        .map(|p| match flat_grad(grads, p) {
            Some(t) => {
                present.push(1.0);
                t
            }
            None => {
                present.push(0.0);
                Tensor::zeros([p.shape.iter().product::<usize>()], &device)
            }
        })
        .collect();
    if parts.is_empty() {
        return;
    }
    let n: usize = params.iter().map(|p| p.shape.iter().product::<usize>()).sum();
    comm.all_reduce_sum(&mut present);
    let all = comm.all_reduce_tensor(Tensor::cat(parts, 0));
    debug_assert_eq!(all.dims()[0], n);
    let mut at = 0;
    for (p, &k) in params.iter().zip(&present) {
        let len = p.shape.iter().product::<usize>();
        if k > 0.0 {
            put_grad(grads, p, all.clone().slice(at..at + len));
        }
        at += len;
    }
}

/// Every rank's metrics merged (sums and counts add up: the global means).
pub fn gather_metrics(comm: &dyn Collective, metrics: Metrics) -> Result<Metrics> {
    if comm.world_size() == 1 {
        return Ok(metrics);
    }
    let mut all = Metrics::default();
    for bytes in comm.all_gather_bytes(&metrics.to_bytes()) {
        all.merge(&Metrics::from_bytes(&bytes)?);
    }
    Ok(all)
}

/// `n` summed over ranks.
pub fn sum(comm: &dyn Collective, n: usize) -> usize {
    if comm.world_size() == 1 {
        return n;
    }
    comm.all_gather_bytes(&(n as u64).to_le_bytes())
        .iter()
        .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize)
        .sum()
}

/// Whether `flag` holds on any rank.
pub fn any(comm: &dyn Collective, flag: bool) -> bool {
    if comm.world_size() == 1 {
        return flag;
    }
    let mut v = [f32::from(u8::from(flag))];
    comm.all_reduce_sum(&mut v);
    v[0] > 0.0
}

/// Every rank's `(group, candidate) → value` entries, in rank order.
pub fn gather_pairs(comm: &dyn Collective, pairs: Vec<((usize, usize), f32)>) -> Result<Vec<((usize, usize), f32)>> {
    if comm.world_size() == 1 {
        return Ok(pairs);
    }
    let rows: Vec<(usize, usize, u32)> = pairs.iter().map(|&((g, c), v)| (g, c, v.to_bits())).collect();
    let mut out = Vec::new();
    for bytes in comm.all_gather_bytes(&serde_json::to_vec(&rows)?) {
        let rows: Vec<(usize, usize, u32)> = serde_json::from_slice(&bytes)?;
        out.extend(rows.into_iter().map(|(g, c, v)| ((g, c), f32::from_bits(v))));
    }
    Ok(out)
}

struct Hash(Sha256);

impl ModuleVisitor for Hash {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        for d in p.shape().dims::<D>().iter() {
            self.0.update((*d as u64).to_le_bytes());
        }
        self.0.update(p.val().into_data().as_bytes());
    }
}

/// Refuses to start when the ranks' weights differ (a node with other model files, another
/// seed). Every rank builds the model from the same files and seed, so instead of broadcasting
/// rank 0's weights (what PyTorch's DDP does for randomly initialised models) each rank hashes
/// its own and the hashes are compared: a mismatch is an error, not silently overwritten.
pub fn check_same_weights(comm: &dyn Collective, model: &CausalLm) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut h = Hash(Sha256::new());
    model.visit(&mut h);
    let mine = h.0.finalize().to_vec();
    let all = comm.all_gather_bytes(&mine);
    if let Some(r) = all.iter().position(|x| *x != all[0]) {
        bail!(
            "rank {r}'s model weights differ from rank 0's (after loading, adapters and resume): every rank must read the same model.path, checkpoint and seed"
        );
    }
    Ok(())
}
