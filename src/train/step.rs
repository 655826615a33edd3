//! One micro-batch: lay out its groups, score every candidate under the policy, arrange the
//! sums as the `[prompts × candidates]` matrix with roles and mask, and hand it to the loss.

use anyhow::Result;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::{Batch, GroupStore};
use crate::losses::{LossConfig, LossOutput, Role, ScoreBatch};
use crate::scores::Scorer;

/// Where each candidate of a batch sits in the score matrix.
pub struct Arrangement {
    /// `(group, candidate)` of every scored sequence, in scoring order.
    pub pairs: Vec<(usize, usize)>,
    /// `[P·C]` index into `pairs` for each slot (0 for padded slots, masked out).
    pub slot: Vec<i64>,
    /// `[P·C]` 1.0 for a real candidate, 0.0 for a padded slot.
    pub mask: Vec<f32>,
    /// `[C]` role of each column.
    pub roles: Vec<Role>,
    /// P: prompts (rows).
    pub prompts: usize,
    /// C: columns (1 + strong + weak).
    pub columns: usize,
}

/// Columns: the positive, then up to S strong negatives, then up to W weak ones.
pub fn arrange(batch: &Batch, store: &GroupStore) -> Arrangement {
    let s = batch.groups.iter().map(|g| store.group(g.group).num_strong()).max().unwrap_or(0);
    let w = batch.groups.iter().map(|g| g.weak.len()).max().unwrap_or(0);
    let c = 1 + s + w;
    let p = batch.groups.len();
    let mut roles = vec![Role::Positive];
    roles.extend(std::iter::repeat_n(Role::Strong, s));
    roles.extend(std::iter::repeat_n(Role::Weak, w));
    let mut a =
        Arrangement { pairs: Vec::new(), slot: vec![0; p * c], mask: vec![0.0; p * c], roles, prompts: p, columns: c };
    for (row, bg) in batch.groups.iter().enumerate() {
        let g = store.group(bg.group);
        let put = |col: usize, cand: usize, a: &mut Arrangement| {
            a.slot[row * c + col] = a.pairs.len() as i64;
            a.mask[row * c + col] = 1.0;
            a.pairs.push((bg.group, cand));
        };
        put(0, g.positive().index(), &mut a);
        for (k, cand) in g.strong().enumerate() {
            put(1 + k, cand.index(), &mut a);
        }
        for (k, &cand) in bg.weak.iter().enumerate() {
            put(1 + s + k, cand, &mut a);
        }
    }
    a
}

fn matrix(values: Vec<f32>, a: &Arrangement, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [a.prompts, a.columns]), device)
}

/// Builds the loss input from policy sums `[N]` (differentiable) and reference sums (host).
pub fn score_batch(
    a: &Arrangement,
    policy: Tensor<1>,
    reference: Option<&[f32]>,
    store: &GroupStore,
    device: &Device,
) -> Result<ScoreBatch> {
    let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(a.slot.clone(), [a.slot.len()]), device);
    let policy_logps = policy.select(0, idx).reshape([a.prompts, a.columns]);
    let gather = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
        a.slot.iter().zip(&a.mask).map(|(&s, &m)| if m > 0.0 { f(s as usize) } else { 0.0 }).collect()
    };
    let ref_logps = reference.map(|r| matrix(gather(&|s| r[s]), a, device));
    let lengths = matrix(gather(&|s| store.candidate(a.pairs[s].1).ids().len() as f32), a, device);
    // True scores exist only for a group's own candidates: a weak negative's score was given for
    // another prompt, so its slot holds 0 (the slope-1 metrics read only positive and strong slots,
    // and a loss that needs every candidate's score refuses a batch with weak columns).
    let own = |s: usize| store.candidate(a.pairs[s].1).group() == a.pairs[s].0;
    let has_scores = (0..a.pairs.len()).all(|s| !own(s) || store.candidate(a.pairs[s].1).score().is_some());
    let true_scores = if has_scores {
        Some(matrix(
            gather(&|s| if own(s) { store.candidate(a.pairs[s].1).score().unwrap_or(0.0) } else { 0.0 }),
            a,
            device,
        ))
    } else {
        None
    };
    Ok(ScoreBatch {
        policy_logps,
        ref_logps,
        lengths,
        mask: matrix(a.mask.clone(), a, device),
        roles: a.roles.clone(),
        true_scores,
    })
}

/// Returns the reference sums of a batch's `(group, candidate)` pairs, in order.
pub type ReferenceFn<'a> = dyn FnMut(&[(usize, usize)]) -> Result<Vec<f32>> + 'a;

/// Loss and metrics of one micro-batch, and the tokens it ran: `scorer` scores the policy
/// (differentiable), `reference` returns the reference sums of the batch's pairs.
pub fn batch_loss(
    scorer: &Scorer,
    store: &GroupStore,
    batch: &Batch,
    reference: &mut ReferenceFn,
    loss: &LossConfig,
) -> Result<(LossOutput, usize)> {
    let a = arrange(batch, store);
    if loss.needs_true_scores() && a.roles.contains(&Role::Weak) {
        anyhow::bail!(
            "a loss term needs the true score of every candidate, but weak negatives have none (their score was given for another prompt): set data.weak.k = 0"
        );
    }
    let policy = scorer.pairs(store, &a.pairs);
    let ref_sums = if loss.needs_reference() { Some(reference(&a.pairs)?) } else { None };
    let sb = score_batch(&a, policy, ref_sums.as_deref(), store, &scorer.device)?;
    let tokens: usize =
        a.pairs.iter().map(|&(g, c)| store.group(g).prompt_ids().len() + store.candidate(c).ids().len()).sum();
    Ok((loss.compute(&sb)?, tokens))
}
