//! TEMPORARY — stand-in for `crate::losses` while the `losses` branch is being written.
//!
//! Same contract names and shapes as `src/losses/mod.rs` (Role, ScoreBatch, LossOutput, Metrics,
//! LossConfig::compute). The lab reaches it only through `lab::loss_api`, so switching to the
//! project's loss module is the one line `pub use crate::losses::*;` there, and then this file is
//! deleted. Only the five losses the lab trains are here: epa, dpo, ipo, plackett_luce, infonca.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, log_softmax, softmax};
use serde::{Deserialize, Serialize};

/// Role of a candidate column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Positive,
    Strong,
    Weak,
}

/// A `[P, C]` score matrix: P prompts (rows), C candidate slots (columns, column 0 positive).
pub struct ScoreBatch {
    pub policy_logps: Tensor<2>,
    pub ref_logps: Option<Tensor<2>>,
    pub lengths: Tensor<2>,
    pub mask: Tensor<2>,
    pub roles: Vec<Role>,
    pub true_scores: Option<Tensor<2>>,
}

/// Sums and counts (mean on demand).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    sums: BTreeMap<String, (f64, f64)>,
}

impl Metrics {
    pub fn merge(&mut self, other: &Metrics) {
        for (k, (s, n)) in &other.sums {
            let e = self.sums.entry(k.clone()).or_insert((0.0, 0.0));
            e.0 += s;
            e.1 += n;
        }
    }
    pub fn mean(&self) -> BTreeMap<String, f64> {
        self.sums.iter().map(|(k, (s, n))| (k.clone(), s / n.max(1.0))).collect()
    }
}

pub struct LossOutput {
    pub loss: Tensor<1>,
    pub metrics: Metrics,
}

/// One weighted term of a loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Term {
    Epa { beta: f64, w: f64, lambda_strong: f64, lambda_weak: f64 },
    Dpo { beta: f64 },
    Ipo { beta: f64 },
    PlackettLuce { beta: f64 },
    Infonca { beta: f64, alpha: f64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossConfig {
    pub terms: Vec<Term>,
}

const MASKED: f32 = -1.0e9;

fn logsumexp(z: Tensor<2>) -> Tensor<1> {
    let m = z.clone().max_dim(1).detach();
    let s = (z - m.clone()).exp().sum_dim(1).log() + m;
    s.flatten(0, 1)
}

impl LossConfig {
    pub fn compute(&self, b: &ScoreBatch) -> anyhow::Result<LossOutput> {
        let [p, c] = b.policy_logps.dims();
        anyhow::ensure!(b.roles.len() == c && c >= 2, "roles must name every one of the {c} columns");
        let logr = match &b.ref_logps {
            Some(r) => b.policy_logps.clone() - r.clone(),
            None => b.policy_logps.clone(),
        };
        let off = b.mask.clone().lower_elem(0.5);
        let mut total: Option<Tensor<1>> = None;
        for term in &self.terms {
            let per_row: Tensor<1> = match *term {
                Term::Epa { beta, w, lambda_strong, lambda_weak } => {
                    let r = logr.clone() * beta;
                    let pos = r.clone().slice([0..p, 0..1]);
                    let mut logl = vec![w.ln() as f32];
                    for role in &b.roles[1..] {
                        logl.push(match role {
                            Role::Strong => lambda_strong.ln() as f32,
                            Role::Weak => lambda_weak.ln() as f32,
                            Role::Positive => 0.0,
                        });
                    }
                    let dev = r.device();
                    let logl = Tensor::<1>::from_floats(logl.as_slice(), &dev).reshape([1, c]);
                    let z = (r - pos) * b.mask.clone();
                    let first = Tensor::<2>::zeros([p, 1], &dev);
                    let z = z.slice_assign([0..p, 0..1], first) + logl;
                    logsumexp(z.mask_fill(off.clone(), MASKED))
                }
                Term::Dpo { beta } => {
                    let h = logr.clone().slice([0..p, 0..1]) - logr.clone().slice([0..p, 1..2]);
                    -log_sigmoid(h * beta).flatten(0, 1)
                }
                Term::Ipo { beta } => {
                    let l = logr.clone() / b.lengths.clone();
                    let h = l.clone().slice([0..p, 0..1]) - l.slice([0..p, 1..2]);
                    (h - 1.0 / (2.0 * beta)).powi_scalar(2).flatten(0, 1)
                }
                Term::PlackettLuce { beta } => {
                    let r = (logr.clone() * beta).mask_fill(off.clone(), MASKED);
                    let mut acc = Tensor::<1>::zeros([p], &r.device());
                    for k in 0..c - 1 {
                        let tail = r.clone().slice([0..p, k..c]);
                        let head = r.clone().slice([0..p, k..k + 1]).flatten(0, 1);
                        let keep = b.mask.clone().slice([0..p, k..k + 1]).flatten(0, 1);
                        acc = acc + (logsumexp(tail) - head) * keep;
                    }
                    acc
                }
                Term::Infonca { beta, alpha } => {
                    let s = b.true_scores.clone().ok_or_else(|| anyhow::anyhow!("infonca needs true_scores"))?;
                    let q = softmax((s / alpha).mask_fill(off.clone(), MASKED), 1);
                    let lp = log_softmax((logr.clone() * beta).mask_fill(off.clone(), MASKED), 1);
                    -(q * lp).sum_dim(1).flatten(0, 1)
                }
            };
            let t = per_row.mean();
            total = Some(match total {
                None => t,
                Some(a) => a + t,
            });
        }
        let loss = total.ok_or_else(|| anyhow::anyhow!("empty loss config"))?;
        Ok(LossOutput { loss, metrics: Metrics::default() })
    }
}
