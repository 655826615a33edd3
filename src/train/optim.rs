//! Learning-rate schedule and global gradient-norm clipping (over all parameters together, as
//! torch's `clip_grad_norm_`; burn's own clipping works tensor by tensor).

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use super::config::{OptimSection, Schedule};

/// Learning rate at optimiser step `step` (0-based) of `total`, as transformers' schedulers give it
/// (`get_linear_schedule_with_warmup` and friends, stepped once per optimiser step): during warm-up
/// `lr · step / warmup_steps`, so the first step has learning rate 0; then constant, linear decay
/// `lr · (total − step) / (total − warmup_steps)` or cosine decay to 0.
pub fn learning_rate(o: &OptimSection, step: usize, total: usize) -> f64 {
    if o.warmup_steps > 0 && step < o.warmup_steps {
        return o.lr * step as f64 / o.warmup_steps as f64;
    }
    let span = total.saturating_sub(o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps.min(step)) as f64 / span).clamp(0.0, 1.0);
    match o.schedule {
        Schedule::Constant => o.lr,
        Schedule::Linear => o.lr * (1.0 - progress),
        Schedule::Cosine => o.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// Parameters transformers' `Trainer` does not decay (`get_decay_parameter_names`): biases and the
/// weights of normalisation layers. In epa's module paths these end in `.bias` and `.gamma` (burn's
/// `RmsNorm` weight).
pub const NO_DECAY: &str = r"(^|\.)(bias|gamma)$";

/// AdamW with decoupled weight decay on every trainable parameter except biases and norm weights,
/// as transformers' `Trainer` builds its optimiser; `optim.decay_bias_and_norm = true` decays
/// those too. Weight decay is applied before the Adam update (`p ← p·(1 − lr·wd) − lr·Δ`), as
/// torch's `AdamW` does.
pub fn adamw(o: &OptimSection) -> ModuleOptimizer {
    let config = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(o.beta1 as f32)
            .with_beta_2(o.beta2 as f32)
            .with_epsilon(o.eps as f32)
            .with_weight_decay(wd as f32)
    };
    let optim = config(o.weight_decay).init();
    if o.decay_bias_and_norm || o.weight_decay == 0.0 {
        return optim;
    }
    let group = ParamGroup::from_regex(NO_DECAY).expect("a valid regex");
    optim.with_group(group, config(0.0).build(), None)
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
