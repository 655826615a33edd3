//! Learning-rate schedule and global gradient-norm clipping (over all parameters together, as
//! torch's `clip_grad_norm_`; burn's own clipping works tensor by tensor).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::config::{OptimSection, Schedule};

/// Learning rate at optimiser step `step` (0-based) of `total`.
pub fn learning_rate(o: &OptimSection, step: usize, total: usize) -> f64 {
    if o.warmup_steps > 0 && step < o.warmup_steps {
        return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let span = total.saturating_sub(o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps.min(step)) as f64 / span).clamp(0.0, 1.0);
    match o.schedule {
        Schedule::Constant => o.lr,
        Schedule::Linear => o.lr * (1.0 - progress),
        Schedule::Cosine => o.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push((p.id, D));
    }
}

/// Ids and ranks of every float parameter of a module.
pub fn param_ids<M: Module>(m: &M) -> Vec<(ParamId, usize)> {
    let mut v = Ids(Vec::new());
    m.visit(&mut v);
    v.0
}

fn sq_norm<const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Tensor<1>> {
    g.get::<D>(id).map(|t| t.square().sum().cast(burn::tensor::FloatDType::F32))
}

fn scale<const D: usize>(g: &mut GradientsParams, id: ParamId, f: f64) {
    if let Some(t) = g.remove::<D>(id) {
        g.register::<D>(id, t.mul_scalar(f));
    }
}

/// Global L2 norm of the gradients; when above `max_norm` (> 0) every gradient is scaled by
/// `max_norm / norm`. Returns the norm before clipping.
///
/// The per-parameter sums of squares are computed on the device and read back in one transfer
/// (one host sync per step, not one per parameter), then added in f64 in parameter order.
pub fn clip_global_norm(grads: &mut GradientsParams, ids: &[(ParamId, usize)], max_norm: f64) -> f64 {
    let parts: Vec<Tensor<1>> = ids
        .iter()
        .filter_map(|&(id, rank)| match rank {
            1 => sq_norm::<1>(grads, id),
            2 => sq_norm::<2>(grads, id),
            3 => sq_norm::<3>(grads, id),
            _ => None,
        })
        .collect();
    let total: f64 = if parts.is_empty() {
        0.0
    } else {
        crate::model::host_f32(Tensor::cat(parts, 0)).iter().map(|&x| x as f64).sum()
    };
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let f = max_norm / (norm + 1e-6);
        for &(id, rank) in ids {
            match rank {
                1 => scale::<1>(grads, id, f),
                2 => scale::<2>(grads, id, f),
                3 => scale::<3>(grads, id, f),
                _ => {}
            }
        }
    }
    norm
}
