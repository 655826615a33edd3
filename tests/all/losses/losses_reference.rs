//! An independent f64 reference for every loss, written loop-by-loop from the formulas, with
//! forward-mode dual numbers so that it also yields exact gradients w.r.t. the policy log-probs.

#![allow(dead_code)]

use epa::losses::Labels;
use epa::losses::{LossTerm, NcaParams, RobustParams, Role};

/// A value and its gradient w.r.t. the N = P·C policy log-probs.
#[derive(Clone, Debug)]
pub struct D {
    pub v: f64,
    pub g: Vec<f64>,
}

impl D {
    pub fn constant(v: f64, n: usize) -> Self {
        Self { v, g: vec![0.0; n] }
    }
    pub fn var(v: f64, i: usize, n: usize) -> Self {
        let mut g = vec![0.0; n];
        g[i] = 1.0;
        Self { v, g }
    }
    fn map(&self, v: f64, dv: f64) -> Self {
        Self { v, g: self.g.iter().map(|x| x * dv).collect() }
    }
    pub fn add(&self, o: &D) -> D {
        D { v: self.v + o.v, g: self.g.iter().zip(&o.g).map(|(a, b)| a + b).collect() }
    }
    pub fn sub(&self, o: &D) -> D {
        D { v: self.v - o.v, g: self.g.iter().zip(&o.g).map(|(a, b)| a - b).collect() }
    }
    pub fn mul(&self, o: &D) -> D {
        D { v: self.v * o.v, g: self.g.iter().zip(&o.g).map(|(a, b)| a * o.v + b * self.v).collect() }
    }
    pub fn scale(&self, k: f64) -> D {
        self.map(self.v * k, k)
    }
    pub fn shift(&self, k: f64) -> D {
        D { v: self.v + k, g: self.g.clone() }
    }
    pub fn neg(&self) -> D {
        self.scale(-1.0)
    }
    pub fn exp(&self) -> D {
        let e = self.v.exp();
        self.map(e, e)
    }
    pub fn ln(&self) -> D {
        self.map(self.v.ln(), 1.0 / self.v)
    }
    /// log σ(x) = min(x, 0) − ln(1 + e^{−|x|}); derivative σ(−x).
    pub fn log_sigmoid(&self) -> D {
        let x = self.v;
        let v = x.min(0.0) - (-x.abs()).exp().ln_1p();
        let sig_neg = if x >= 0.0 { (-x).exp() / (1.0 + (-x).exp()) } else { 1.0 / (1.0 + x.exp()) };
        self.map(v, sig_neg)
    }
    pub fn relu(&self) -> D {
        if self.v > 0.0 { self.clone() } else { self.map(0.0, 0.0) }
    }
    pub fn square(&self) -> D {
        self.map(self.v * self.v, 2.0 * self.v)
    }
}

pub fn sum(xs: &[D], n: usize) -> D {
    xs.iter().fold(D::constant(0.0, n), |a, b| a.add(b))
}

pub fn lse(xs: &[D], n: usize) -> D {
    let m = xs.iter().map(|x| x.v).fold(f64::NEG_INFINITY, f64::max);
    let s = sum(&xs.iter().map(|x| x.shift(-m).exp()).collect::<Vec<_>>(), n);
    s.ln().shift(m)
}

/// One random (or hand-made) test case: host data of a score batch.
#[derive(Clone, Debug)]
pub struct Case {
    pub roles: Vec<Role>,
    pub policy: Vec<Vec<f64>>,
    pub reference: Vec<Vec<f64>>,
    pub lengths: Vec<Vec<f64>>,
    pub mask: Vec<Vec<bool>>,
    pub truth: Vec<Vec<f64>>,
}

impl Case {
    pub fn p(&self) -> usize {
        self.policy.len()
    }
    pub fn c(&self) -> usize {
        self.roles.len()
    }
    fn n(&self) -> usize {
        self.p() * self.c()
    }
    fn pol(&self, p: usize, j: usize) -> D {
        D::var(self.policy[p][j], p * self.c() + j, self.n())
    }
    fn logratio(&self, p: usize, j: usize) -> D {
        self.pol(p, j).shift(-self.reference[p][j])
    }
    fn reward(&self, p: usize, j: usize, beta: f64) -> D {
        self.logratio(p, j).scale(beta)
    }
    fn len(&self, p: usize, j: usize) -> f64 {
        self.lengths[p][j].max(1.0)
    }
    /// Real columns j ≥ 1 of prompt p whose role is in `roles`.
    fn real(&self, p: usize, roles: &[Role]) -> Vec<usize> {
        (1..self.c()).filter(|&j| self.mask[p][j] && roles.contains(&self.roles[j])).collect()
    }
}

fn pair_roles(use_weak: bool) -> Vec<Role> {
    if use_weak { vec![Role::Strong, Role::Weak] } else { vec![Role::Strong] }
}

fn list_roles(include_weak: bool) -> Vec<Role> {
    pair_roles(include_weak)
}

/// Per-prompt loss of one term (None = prompt skipped).
pub fn prompt_loss(case: &Case, term: &LossTerm, p: usize) -> Option<D> {
    let n = case.n();
    if !case.mask[p][0] {
        return None;
    }
    let pairwise = |roles: Vec<Role>, f: &dyn Fn(usize) -> D| -> Option<D> {
        let negs = case.real(p, &roles);
        if negs.is_empty() {
            return None;
        }
        let terms: Vec<D> = negs.iter().map(|&j| f(j)).collect();
        Some(sum(&terms, n).scale(1.0 / negs.len() as f64))
    };
    let smoothed = |z: D, eps: f64| z.log_sigmoid().scale(-(1.0 - eps)).sub(&z.neg().log_sigmoid().scale(eps));
    match term {
        LossTerm::Epa(q) => {
            let (mut ns, mut nw) = (0usize, 0usize);
            let mut terms = vec![D::constant(q.w.ln(), n)];
            for j in 1..case.c() {
                let (use_it, lambda) = match case.roles[j] {
                    Role::Strong => {
                        ns += usize::from(case.mask[p][j]); // counts real slots only
                        (q.use_strong && q.max_strong.is_none_or(|m| ns <= m), q.lambda_strong)
                    }
                    Role::Weak => {
                        nw += usize::from(case.mask[p][j]);
                        (q.use_weak && q.max_weak.is_none_or(|m| nw <= m), q.lambda_weak)
                    }
                    Role::Positive => (false, 1.0),
                };
                if use_it && case.mask[p][j] {
                    let d = case.reward(p, j, q.beta).sub(&case.reward(p, 0, q.beta));
                    terms.push(d.shift(lambda.ln()));
                }
            }
            (terms.len() > 1).then(|| lse(&terms, n))
        }
        LossTerm::Dpo(q) => pairwise(pair_roles(q.use_weak), &|j| {
            let delta = case.logratio(p, 0).sub(&case.logratio(p, j));
            smoothed(delta.scale(q.beta), q.label_smoothing)
        }),
        LossTerm::Robust(RobustParams(q)) => pairwise(pair_roles(q.use_weak), &|j| {
            let z = case.logratio(p, 0).sub(&case.logratio(p, j)).scale(q.beta);
            let eps = q.label_smoothing;
            z.log_sigmoid().scale(-(1.0 - eps)).add(&z.neg().log_sigmoid().scale(eps)).scale(1.0 / (1.0 - 2.0 * eps))
        }),
        LossTerm::Ipo(q) => pairwise(pair_roles(q.use_weak), &|j| {
            let (lc, lr) = if q.length_normalize { (case.len(p, 0), case.len(p, j)) } else { (1.0, 1.0) };
            let d = case.logratio(p, 0).scale(1.0 / lc).sub(&case.logratio(p, j).scale(1.0 / lr));
            d.shift(-1.0 / (2.0 * q.beta)).square()
        }),
        LossTerm::Hinge(q) => pairwise(pair_roles(q.use_weak), &|j| {
            case.logratio(p, 0).sub(&case.logratio(p, j)).scale(-q.beta).shift(1.0).relu()
        }),
        LossTerm::Simpo(q) => pairwise(pair_roles(q.use_weak), &|j| {
            let s = |k: usize| case.pol(p, k).scale(1.0 / case.len(p, k));
            smoothed(s(0).sub(&s(j)).scale(q.beta).shift(-q.gamma), q.label_smoothing)
        }),
        LossTerm::NcaPair(q) => pairwise(pair_roles(q.use_weak), &|j| {
            let rc = case.reward(p, 0, q.beta);
            let rr = case.reward(p, j, q.beta);
            rc.log_sigmoid().neg().sub(&rc.neg().log_sigmoid().scale(0.5)).sub(&rr.neg().log_sigmoid().scale(0.5))
        }),
        LossTerm::Nca(NcaParams(q)) => {
            let cand = candidates(case, p, q.include_weak)?;
            let t = targets(case, p, &cand, q.labels, q.alpha);
            let k = cand.len() as f64;
            let terms: Vec<D> = cand
                .iter()
                .zip(&t)
                .map(|(&j, &qj)| {
                    let r = case.reward(p, j, q.beta);
                    r.log_sigmoid().scale(-qj).sub(&r.neg().log_sigmoid().scale(1.0 / k))
                })
                .collect();
            Some(sum(&terms, n))
        }
        LossTerm::Infonca(q) => {
            let cand = candidates(case, p, q.include_weak)?;
            let t = targets(case, p, &cand, q.labels, q.alpha);
            let r: Vec<D> = cand.iter().map(|&j| case.reward(p, j, q.beta)).collect();
            let z = lse(&r, n);
            let terms: Vec<D> = r.iter().zip(&t).map(|(ri, &qi)| z.sub(ri).scale(qi)).collect();
            Some(sum(&terms, n))
        }
        LossTerm::PlackettLuce(q) => {
            let mut cand = candidates(case, p, q.include_weak)?;
            // Highest true score first; ties: earlier column first (stable sort).
            cand.sort_by(|&a, &b| case.truth[p][b].partial_cmp(&case.truth[p][a]).unwrap());
            let r: Vec<D> = cand.iter().map(|&j| case.reward(p, j, q.beta)).collect();
            let terms: Vec<D> = (0..r.len() - 1).map(|k| lse(&r[k..], n).sub(&r[k])).collect();
            Some(sum(&terms, n))
        }
        LossTerm::Sft(q) => {
            let l = if q.length_normalize { case.len(p, 0) } else { 1.0 };
            Some(case.pol(p, 0).scale(-1.0 / l))
        }
    }
}

/// Candidate columns of the listwise losses: the positive then real negatives; None if < 2.
fn candidates(case: &Case, p: usize, include_weak: bool) -> Option<Vec<usize>> {
    let mut cand = vec![0];
    cand.extend(case.real(p, &list_roles(include_weak)));
    (cand.len() >= 2).then_some(cand)
}

fn targets(case: &Case, p: usize, cand: &[usize], labels: Labels, alpha: f64) -> Vec<f64> {
    match labels {
        Labels::OneHot => cand.iter().map(|&j| if j == 0 { 1.0 } else { 0.0 }).collect(),
        Labels::Soft => {
            let s: Vec<f64> = cand.iter().map(|&j| case.truth[p][j] / alpha).collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            s.iter().map(|x| (x - m).exp() / z).collect()
        }
    }
}

/// Mean over counted prompts of one term, and the number counted.
pub fn term_loss(case: &Case, term: &LossTerm) -> (D, usize) {
    let losses: Vec<D> = (0..case.p()).filter_map(|p| prompt_loss(case, term, p)).collect();
    let k = losses.len();
    let mean = if k == 0 { D::constant(0.0, case.n()) } else { sum(&losses, case.n()).scale(1.0 / k as f64) };
    (mean, k)
}

/// Σ weight × term mean.
pub fn total_loss(case: &Case, terms: &[LossTerm]) -> D {
    let parts: Vec<D> = terms.iter().map(|t| term_loss(case, t).0.scale(t.weight())).collect();
    sum(&parts, case.n())
}
