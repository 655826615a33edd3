//! The only place where the lab meets the loss contract: a method's configuration and the
//! `ScoreBatch` built from the tabular policy's log-probabilities.
//!
//! Several initialisations train side by side in one `[I·N, M]` logit matrix: init `i` owns
//! rows `i·N .. (i+1)·N`, and its score-matrix rows are `i·R .. (i+1)·R` (R rows per init). The
//! inits never share a parameter, the optimiser (Adam) is element-wise, and the training loss is
//! `I × mean over all I·R rows = Σ_i L_i`, so each init follows exactly its own gradient.

use burn::tensor::{Device, Int, Tensor, TensorData};

use anyhow::Context;

use super::loss_api::{
    DpoParams, EpaParams, InfoNcaParams, IpoParams, LossConfig, LossTerm, PlackettLuceParams, Role, ScoreBatch,
};
use super::methods::{Method, MethodKind, ScoreRows};
use super::world::World;

/// Loss hyper-parameters shared by every method.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    /// β of r = β·(log π_θ − log π_ref); IPO's τ.
    pub beta: f64,
    /// EPA's w.
    pub w: f64,
    /// EPA's weight on weak negatives.
    pub lambda_weak: f64,
    /// InfoNCA's label temperature α.
    pub infonca_alpha: f64,
}

/// The loss configuration that trains `method`: one term of the loss module, typed.
pub fn loss_config(method: &Method, h: &Hyper) -> anyhow::Result<LossConfig> {
    let beta = h.beta;
    let term = match method.kind {
        MethodKind::Dpo => LossTerm::Dpo(DpoParams { beta, ..Default::default() }),
        MethodKind::Ipo => LossTerm::Ipo(IpoParams { beta, ..Default::default() }),
        // Both rank by `true_scores`, which the lab fills with the sampled ranking (k−1−rank).
        MethodKind::PlackettLuce => LossTerm::PlackettLuce(PlackettLuceParams { beta, ..Default::default() }),
        MethodKind::Infonca => LossTerm::Infonca(InfoNcaParams { beta, alpha: h.infonca_alpha, ..Default::default() }),
        MethodKind::EpaStrong | MethodKind::EpaWeak | MethodKind::Epa => LossTerm::Epa(EpaParams {
            beta,
            w: h.w,
            lambda_strong: 1.0,
            lambda_weak: h.lambda_weak,
            use_strong: method.kind != MethodKind::EpaWeak,
            use_weak: method.kind != MethodKind::EpaStrong,
            ..Default::default()
        }),
    };
    let cfg = LossConfig { terms: vec![term], metrics_beta: None };
    cfg.validate().with_context(|| format!("loss configuration of {}", method.label()))?;
    Ok(cfg)
}

/// The training loss of one step: the loss module's own terms, Σ weight × (mean over prompts of
/// `LossTerm::per_prompt`) — exactly what `LossConfig::compute` returns as `loss` — without the
/// per-step metrics (dozens of host reads each), which the lab does not use while training.
/// `LossConfig::compute` itself gives every reported final loss.
pub fn training_loss(cfg: &LossConfig, batch: &ScoreBatch) -> anyhow::Result<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for term in &cfg.terms {
        let t = term.per_prompt(batch)?.mean().mul_scalar(term.weight());
        total = Some(match total {
            None => t,
            Some(a) => a + t,
        });
    }
    total.ok_or_else(|| anyhow::anyhow!("loss configuration has no terms"))
}

/// Whether the method reads `true_scores` (the lab's ordinal rank scores).
pub fn needs_scores(method: &Method) -> bool {
    matches!(method.kind, MethodKind::PlackettLuce | MethodKind::Infonca)
}

/// A method's rows for `inits` stacked initialisations, as index and constant tensors.
pub struct IndexBatch {
    /// Initialisations stacked in the batch.
    pub inits: usize,
    /// Rows per initialisation.
    pub rows: usize,
    /// Candidate columns per row.
    pub cols: usize,
    roles: Vec<Role>,
    /// Flat indices into the `[I·N·M]` log-prob vector, `[I·R·C]`.
    index: Tensor<1, Int>,
    ref_logps: Tensor<2>,
    mask: Tensor<2>,
    lengths: Tensor<2>,
    scores: Option<Tensor<2>>,
}

impl IndexBatch {
    /// Builds the index and constant tensors of `layout`'s rows, repeated for `inits`
    /// initialisations; `with_scores` adds the rank scores (see [`needs_scores`]).
    pub fn new(layout: &ScoreRows, world: &World, inits: usize, with_scores: bool, device: &Device) -> IndexBatch {
        let (n, m) = (world.n_prompts, world.n_responses);
        let rows = layout.rows.len();
        let cols = layout.roles.len();
        let mut index = Vec::with_capacity(inits * rows * cols);
        for i in 0..inits {
            for row in &layout.rows {
                index.extend(row.ids.iter().map(|&y| ((i * n + row.prompt) * m + y) as i64));
            }
        }
        let per_init = |f: &dyn Fn(&super::methods::Row) -> Vec<f32>| -> Tensor<2> {
            let mut v = Vec::with_capacity(inits * rows * cols);
            for _ in 0..inits {
                for row in &layout.rows {
                    v.extend(f(row));
                }
            }
            Tensor::from_data(TensorData::new(v, [inits * rows, cols]), device)
        };
        let ref_logps = per_init(&|r| r.ids.iter().map(|&y| world.ref_logp[r.prompt * m + y] as f32).collect());
        let mask = per_init(&|r| r.mask.clone());
        let scores = with_scores.then(|| per_init(&|r| r.scores.clone()));
        IndexBatch {
            inits,
            rows,
            cols,
            roles: layout.roles.clone(),
            index: Tensor::from_data(TensorData::new(index, [inits * rows * cols]), device),
            ref_logps,
            lengths: Tensor::ones([inits * rows, cols], device),
            mask,
            scores,
        }
    }

    /// The score matrix of all inits from log π_θ, `[I·N, M]` (differentiable).
    pub fn batch(&self, logp: Tensor<2>) -> ScoreBatch {
        let policy = logp.flatten::<1>(0, 1).select(0, self.index.clone()).reshape([self.inits * self.rows, self.cols]);
        ScoreBatch {
            policy_logps: policy,
            ref_logps: Some(self.ref_logps.clone()),
            lengths: self.lengths.clone(),
            mask: self.mask.clone(),
            roles: self.roles.clone(),
            true_scores: self.scores.clone(),
        }
    }

    /// The rows of init `i` alone.
    pub fn slice(&self, b: &ScoreBatch, i: usize) -> ScoreBatch {
        let r = i * self.rows..(i + 1) * self.rows;
        let s = |t: &Tensor<2>| t.clone().slice([r.clone(), 0..self.cols]);
        ScoreBatch {
            policy_logps: s(&b.policy_logps),
            ref_logps: b.ref_logps.as_ref().map(s),
            lengths: s(&b.lengths),
            mask: s(&b.mask),
            roles: b.roles.clone(),
            true_scores: b.true_scores.as_ref().map(s),
        }
    }
}
