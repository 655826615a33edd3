//! Full-batch training of the tabular policy (free logits, π_θ = softmax) with burn's Adam.

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand_distr::{Distribution, Normal};

use super::adapter::{IndexBatch, training_loss};
use super::loss_api::LossConfig;
use super::world::{World, rng, stream};

/// The policy: one free logit per (prompt, response); I initialisations stacked as `[I·N, M]`.
#[derive(Module, Debug)]
pub struct TabularPolicy {
    /// `[I·N, M]` free logits: π_θ(·|x) is the softmax of a row.
    pub logits: Param<Tensor<2>>,
}

/// Optimiser settings.
#[derive(Clone, Copy, Debug)]
pub struct FitSettings {
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Peak learning rate (cosine decay to 0).
    pub lr: f64,
    /// Random initialisations, trained side by side.
    pub inits: usize,
    /// Initial logits = log π_ref + init_sd · N(0, 1), one seed stream per init.
    pub init_sd: f64,
    /// Seed of the initial logits (init `i` draws from stream `INIT + i`).
    pub seed: u64,
}

/// What one method's training left behind.
pub struct Trained {
    /// Final logits of every init, `[I, N·M]` as f32 read back from the device.
    pub logits: Vec<Vec<f32>>,
    /// Final loss of each init, by the loss module, on its own rows.
    pub final_loss: Vec<f64>,
    /// Mean-over-inits training loss at 90% of the steps (convergence check).
    pub loss_at_90pct: f64,
}

/// The initial logits of every init (identical for every method, so methods start alike).
pub fn init_logits(world: &World, spec: &FitSettings) -> anyhow::Result<Vec<f32>> {
    let unit = Normal::new(0.0, 1.0)?;
    let mut v = Vec::with_capacity(spec.inits * world.ref_logp.len());
    for i in 0..spec.inits {
        let mut r = rng(spec.seed, stream::INIT + i as u64);
        v.extend(world.ref_logp.iter().map(|l| (l + spec.init_sd * unit.sample(&mut r)) as f32));
    }
    Ok(v)
}

/// log π_θ = logits − logsumexp(logits), with the logsumexp held constant for the gradient.
///
/// Every lab loss depends on log π only through differences within a prompt, so the gradient of
/// the normaliser is exactly zero in exact arithmetic — but in f32 it is rounding noise, and Adam
/// (scale-free) turns that noise into lr-sized steps on responses the loss never touches, which
/// would move the never-compared logits DPO must leave alone. Values are the true log-probs.
pub fn log_policy(logits: Tensor<2>) -> Tensor<2> {
    let lse = log_softmax(logits.clone().detach(), 1);
    logits.clone() - (logits.detach() - lse)
}

/// Cosine learning-rate decay from `lr` to 0 over the run (lets Adam settle to the minimum).
fn lr_at(spec: &FitSettings, t: usize) -> f64 {
    let p = t as f64 / spec.steps as f64;
    spec.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// Trains all inits of one method to (near) its minimum.
pub fn train(
    world: &World,
    cfg: &LossConfig,
    ib: &IndexBatch,
    init: &[f32],
    spec: &FitSettings,
    device: &Device,
) -> anyhow::Result<Trained> {
    let (n, m) = (world.n_prompts, world.n_responses);
    let shape = [spec.inits * n, m];
    let t0 = Tensor::<2>::from_data(TensorData::new(init.to_vec(), shape), device);
    let mut policy = TabularPolicy { logits: Param::from_tensor(t0) };
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let mut loss_at_90pct = f64::NAN;
    let mark = spec.steps * 9 / 10;
    for t in 0..spec.steps {
        let logp = log_policy(policy.logits.val());
        let loss = training_loss(cfg, &ib.batch(logp))?;
        if t == mark {
            loss_at_90pct = loss.clone().into_scalar::<f32>() as f64;
        }
        let loss = loss * spec.inits as f32;
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        policy = optim.step(lr_at(spec, t), policy, grads);
    }
    let logits = policy.logits.val().detach();
    let batch = ib.batch(log_softmax(logits.clone(), 1));
    let mut final_loss = Vec::with_capacity(spec.inits);
    for i in 0..spec.inits {
        let l = cfg.compute(&ib.slice(&batch, i))?.loss.into_scalar::<f32>();
        anyhow::ensure!(l.is_finite(), "training diverged: final loss of init {i} is {l}");
        final_loss.push(l as f64);
    }
    let flat: Vec<f32> = logits.try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
    let logits = flat.chunks(n * m).map(|c| c.to_vec()).collect();
    Ok(Trained { logits, final_loss, loss_at_90pct })
}
