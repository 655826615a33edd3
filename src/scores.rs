//! Scores: log-probabilities of response tokens under a model, and their sums per candidate —
//! the quantity every preference loss consumes.
//!
//! A [`Targets`] list says, for each scored token, which position's hidden state predicts it and
//! which candidate it belongs to. Plain padded batches predict token t+1 from position t; with a
//! shared prompt the first token of every response is predicted from the prompt's last position.
//! Only the scored positions go through `lm_head` and the log-softmax over the vocabulary, so
//! prompt tokens never materialise full-vocabulary logits.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use crate::model::host_f32;
use crate::model::{CausalLm, ForwardInputs, Layout, Rope};

/// Which tokens to score in a laid-out batch.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Flat index `b·T + t` of the predicting position.
    pub from: Vec<i64>,
    /// Token id predicted there.
    pub token: Vec<i64>,
    /// Candidate (sequence) the token belongs to.
    pub owner: Vec<usize>,
    /// Number of candidates.
    pub n_owners: usize,
}

impl Targets {
    /// For independent sequences laid out by [`Layout::padded`]: token t+1 of sequence b is
    /// scored when `mask[b][t+1] != 0` (`mask` is a completion mask over the sequence's ids).
    /// With `all = true` every next-token is scored (the `--per-token` convention).
    pub fn padded(layout: &Layout, seqs: &[&[u32]], masks: &[&[u8]], all: bool) -> Targets {
        let mut t = Targets { n_owners: seqs.len(), ..Default::default() };
        for (b, ids) in seqs.iter().enumerate() {
            for p in 0..ids.len().saturating_sub(1) {
                if all || masks[b][p + 1] != 0 {
                    t.from.push((b * layout.len + p) as i64);
                    t.token.push(ids[p + 1] as i64);
                    t.owner.push(b);
                }
            }
        }
        t
    }

    /// For groups laid out by [`Layout::shared_prefix`]: every token of every response is scored;
    /// owners are numbered group by group, response by response.
    pub fn shared_prefix(layout: &Layout, groups: &[(&[u32], Vec<&[u32]>)]) -> Targets {
        let mut t = Targets::default();
        let mut owner = 0;
        for (b, (prompt, responses)) in groups.iter().enumerate() {
            let row = b * layout.len;
            let mut start = prompt.len();
            for r in responses {
                for (j, &id) in r.iter().enumerate() {
                    let pred = if j == 0 { prompt.len() - 1 } else { start + j - 1 };
                    t.from.push((row + pred) as i64);
                    t.token.push(id as i64);
                    t.owner.push(owner);
                }
                start += r.len();
                owner += 1;
            }
        }
        t.n_owners = owner;
        t
    }

    pub fn len(&self) -> usize {
        self.from.len()
    }

    pub fn is_empty(&self) -> bool {
        self.from.is_empty()
    }

    /// Tokens scored per owner.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.n_owners];
        for &o in &self.owner {
            c[o] += 1;
        }
        c
    }
}

/// Log-probabilities of the targets: per token `[N]` and summed per owner `[n_owners]`.
pub struct Scored {
    pub token_logps: Tensor<1>,
    pub sums: Tensor<1>,
}

static BLOCK_ATTENTION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether [`score`] uses block-sparse attention for prefix-shared layouts (default) or the dense
/// `[T × T]` mask (same numbers, more work; for benchmarks: `epa bench --dense-attention`).
pub fn set_block_attention(on: bool) {
    BLOCK_ATTENTION.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Runs the model on `layout` and scores `targets`. Differentiable when the model is on an
/// autodiff device.
pub fn score(model: &CausalLm, rope: &Rope, layout: &Layout, targets: &Targets, device: &Device) -> Scored {
    let (inputs, blocks) = if BLOCK_ATTENTION.load(std::sync::atomic::Ordering::Relaxed) {
        ForwardInputs::blocked(layout, rope, device)
    } else {
        (ForwardInputs::from_layout(layout, rope, device), None)
    };
    let hidden = model.hidden_with(&inputs, blocks.as_ref(), None);
    score_hidden(model, hidden, targets, device)
}

/// Scores targets from final hidden states `[B, T, H]`.
pub fn score_hidden(model: &CausalLm, hidden: Tensor<3>, targets: &Targets, device: &Device) -> Scored {
    let [b, t, h] = hidden.dims();
    let n = targets.len();
    if n == 0 {
        return Scored { token_logps: Tensor::zeros([0], device), sums: Tensor::zeros([targets.n_owners], device) };
    }
    let flat = hidden.reshape([b * t, h]);
    let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(targets.from.clone(), [n]), device);
    let picked = flat.select(0, idx); // [N, H]
    let logp = log_softmax(model.logits(picked), 1); // [N, V]
    let tok: Tensor<2, Int> = Tensor::from_data(TensorData::new(targets.token.clone(), [n, 1]), device);
    let token_logps = logp.gather(1, tok).reshape([n]);
    // Sum per owner with a one-hot [owners, N] matrix (a differentiable segment sum).
    let mut onehot = vec![0f32; targets.n_owners * n];
    for (i, &o) in targets.owner.iter().enumerate() {
        onehot[o * n + i] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [targets.n_owners, n]), device);
    let sums = onehot.matmul(token_logps.clone().reshape([n, 1])).reshape([targets.n_owners]);
    Scored { token_logps, sums }
}
