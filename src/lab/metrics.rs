//! The paper's slope-1 diagnostics and the RLHF quantities, on ALL M responses of every prompt.
//!
//! Learned reward r_θ(x,y) = β·(log π_θ(y|x) − log π_ref(y|x)). Per prompt x (averaged over x):
//! - Pearson(r_θ(x,·), r*(x,·));
//! - ε̂ = Var_y(r_θ(x,y) − r*(x,y)), population variance over the responses (0 iff slope-1:
//!   r_θ = r* + c(x)); also split into the responses x compared (`seen`) and those it never did;
//! - KL(π_θ‖π_ref) = Σ_y π_θ (log π_θ − log π_ref);
//! - `E_{π_θ}[r*]`;
//! - the mass π_θ leaves on never-compared responses.
//!
//! Everything in f64 from the f32 logits.

use serde::Serialize;

use super::world::{World, log_normalise};

/// Metrics of one trained policy (one init).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PolicyMetrics {
    /// Pearson(r_θ(x,·), r*(x,·)) over all M responses, averaged over prompts (0 where a side is
    /// constant).
    pub pearson: f64,
    /// ε̂ = Var_y(r_θ − r*) over all M responses, averaged over prompts (0 iff slope-1).
    pub eps_hat: f64,
    /// ε̂ over the responses the prompt compared (prompts with at least 2 of them; NaN if none).
    pub eps_hat_seen: f64,
    /// ε̂ over the responses the prompt never compared (prompts with at least 2 of them; NaN if
    /// none).
    pub eps_hat_unseen: f64,
    /// KL(π_θ ‖ π_ref) in nats, exact over the M responses, averaged over prompts.
    pub kl: f64,
    /// `E_{π_θ}[r*]`: the policy's expected true reward, averaged over prompts.
    pub expected_reward: f64,
    /// Probability mass π_θ puts on responses the prompt never compared (mean over prompts).
    pub mass_unseen: f64,
}

/// log π_θ(·|x) of every prompt from `[N·M]` logits.
pub fn log_policy(world: &World, logits: &[f32]) -> Vec<f64> {
    let mut v: Vec<f64> = logits.iter().map(|&a| a as f64).collect();
    for row in v.chunks_mut(world.n_responses) {
        log_normalise(row);
    }
    v
}

/// r_θ(x,y) = β (log π_θ − log π_ref), `[N·M]`.
pub fn learned_reward(world: &World, logp: &[f64], beta: f64) -> Vec<f64> {
    logp.iter().zip(&world.ref_logp).map(|(a, b)| beta * (a - b)).collect()
}

/// All metrics of one policy given as logits.
pub fn evaluate(world: &World, logits: &[f32], seen: &[bool], beta: f64) -> PolicyMetrics {
    let logp = log_policy(world, logits);
    let r = learned_reward(world, &logp, beta);
    let m = world.n_responses;
    let mut acc = PolicyMetrics::default();
    let (mut n_seen, mut n_unseen) = (0usize, 0usize);
    for x in 0..world.n_prompts {
        let rx = &r[x * m..(x + 1) * m];
        let sx = world.row(&world.reward, x);
        let lx = &logp[x * m..(x + 1) * m];
        let refx = world.row(&world.ref_logp, x);
        let seenx = &seen[x * m..(x + 1) * m];
        acc.pearson += pearson(rx, sx);
        let diff: Vec<f64> = rx.iter().zip(sx).map(|(a, b)| a - b).collect();
        acc.eps_hat += variance(&diff);
        let pick =
            |want: bool| -> Vec<f64> { diff.iter().zip(seenx).filter(|&(_, &s)| s == want).map(|(d, _)| *d).collect() };
        let (ds, du) = (pick(true), pick(false));
        if ds.len() >= 2 {
            acc.eps_hat_seen += variance(&ds);
            n_seen += 1;
        }
        if du.len() >= 2 {
            acc.eps_hat_unseen += variance(&du);
            n_unseen += 1;
        }
        acc.kl += lx.iter().zip(refx).map(|(l, q)| l.exp() * (l - q)).sum::<f64>();
        acc.expected_reward += lx.iter().zip(sx).map(|(l, s)| l.exp() * s).sum::<f64>();
        acc.mass_unseen += lx.iter().zip(seenx).filter(|&(_, &s)| !s).map(|(l, _)| l.exp()).sum::<f64>();
    }
    let n = world.n_prompts as f64;
    acc.pearson /= n;
    acc.eps_hat /= n;
    acc.kl /= n;
    acc.expected_reward /= n;
    acc.mass_unseen /= n;
    acc.eps_hat_seen = if n_seen > 0 { acc.eps_hat_seen / n_seen as f64 } else { f64::NAN };
    acc.eps_hat_unseen = if n_unseen > 0 { acc.eps_hat_unseen / n_unseen as f64 } else { f64::NAN };
    acc
}

/// Reference points: π_ref itself and the KL-regularised optimum π* ∝ π_ref·exp(r*/β).
pub fn reference_points(world: &World, beta: f64) -> (PolicyMetrics, PolicyMetrics) {
    let seen = vec![true; world.ref_logp.len()];
    let as_f32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let reference = evaluate(world, &as_f32(&world.ref_logp), &seen, beta);
    let opt: Vec<f64> = world.ref_logp.iter().zip(&world.reward).map(|(l, r)| l + r / beta).collect();
    let optimum = evaluate(world, &as_f32(&opt), &seen, beta);
    (reference, optimum)
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa <= 0.0 || sbb <= 0.0 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

/// Arithmetic mean; 0 when empty.
pub fn mean(a: &[f64]) -> f64 {
    a.iter().sum::<f64>() / a.len().max(1) as f64
}

/// Population variance (divides by n).
pub fn variance(a: &[f64]) -> f64 {
    let m = mean(a);
    a.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / a.len().max(1) as f64
}

/// Sample standard deviation (divides by n − 1); 0 for fewer than two values.
pub fn sd(a: &[f64]) -> f64 {
    if a.len() < 2 {
        return 0.0;
    }
    let m = mean(a);
    (a.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (a.len() - 1) as f64).sqrt()
}
