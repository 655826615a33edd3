//! Scores: log-probabilities of response tokens under a model, and their sums per candidate —
//! the quantity every preference loss consumes.
//!
//! A [`Targets`] list says, for each scored token, which position's hidden state predicts it and
//! which candidate it belongs to. Plain padded batches predict token t+1 from position t; with a
//! shared prompt the first token of every response is predicted from the prompt's last position.
//! Only the scored positions go through `lm_head` and the log-softmax over the vocabulary, so
//! prompt tokens never materialise full-vocabulary logits.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::GroupStore;
pub use crate::model::host_f32;
use crate::model::load::LoadedModel;
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

    /// Number of scored tokens.
    pub fn len(&self) -> usize {
        self.from.len()
    }

    /// Whether no token is scored.
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
    /// `[N]` log-prob of each target token.
    pub token_logps: Tensor<1>,
    /// `[n_owners]` summed log-probs per candidate.
    pub sums: Tensor<1>,
}

/// How a prefix-shared row attends: block-sparse (each response sees the prompt and itself; the
/// default) or through the dense `[T × T]` mask (same numbers, more work; for benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    #[default]
    /// Each response attends to the prompt and itself only (block-sparse).
    Block,
    /// The dense `[T × T]` causal mask with blocks zeroed.
    Dense,
}

/// Scores candidates under one model: the model with its rope, pad id and device, and how
/// candidates are laid out. Every stage that needs log-probs (the training step, the reference
/// pass and cache, evaluation, `epa score`, the bench) goes through one.
///
/// ```no_run
/// # use epa::scores::Scorer;
/// # fn demo(lm: &epa::model::load::LoadedModel, store: &epa::data::GroupStore) {
/// let scorer = Scorer::of(lm).prefix_sharing(true);
/// let sums = scorer.pairs_host(store, &[(0, 0), (0, 1)]); // Σ log π(response | prompt) per pair
/// # }
/// ```
#[derive(Clone)]
pub struct Scorer<'m> {
    /// The model that scores.
    pub model: &'m CausalLm,
    /// Its rotary tables.
    pub rope: &'m Rope,
    /// The id that fills padded positions.
    pub pad_id: u32,
    /// Where input tensors are made: the model's device (autodiff included when training).
    pub device: Device,
    /// Score a group's candidates in one row after their prompt, which runs once (else one
    /// padded row per candidate).
    pub prefix_sharing: bool,
    /// How prefix-shared rows attend.
    pub attention: Attention,
}

impl<'m> Scorer<'m> {
    /// A scorer with prefix sharing and block attention, on `device`.
    pub fn new(model: &'m CausalLm, rope: &'m Rope, pad_id: u32, device: &Device) -> Self {
        Scorer { model, rope, pad_id, device: device.clone(), prefix_sharing: true, attention: Attention::Block }
    }

    /// [`Scorer::new`] for a loaded model, on the model's device.
    pub fn of(lm: &'m LoadedModel) -> Self {
        Self::new(&lm.model, &lm.rope, lm.pad_id(), &lm.model.device())
    }

    /// The same settings for another model (a reference, a LoRA-off view) with `rope` and `pad_id`.
    pub fn with_model<'n>(&self, model: &'n CausalLm, rope: &'n Rope, pad_id: u32) -> Scorer<'n> {
        Scorer {
            model,
            rope,
            pad_id,
            device: self.device.clone(),
            prefix_sharing: self.prefix_sharing,
            attention: self.attention,
        }
    }

    /// Sets [`Self::prefix_sharing`].
    pub fn prefix_sharing(mut self, on: bool) -> Self {
        self.prefix_sharing = on;
        self
    }

    /// Sets [`Self::attention`].
    pub fn attention(mut self, attention: Attention) -> Self {
        self.attention = attention;
        self
    }

    /// Runs the model on `layout` and scores `targets`. Differentiable when the model is on an
    /// autodiff device.
    pub fn score(&self, layout: &Layout, targets: &Targets) -> Scored {
        let device = &self.device;
        let (inputs, blocks) = match self.attention {
            Attention::Block => ForwardInputs::blocked(layout, self.rope, device),
            Attention::Dense => (ForwardInputs::from_layout(layout, self.rope, device), None),
        };
        let hidden = self.model.hidden_with(&inputs, blocks.as_ref(), None);
        score_hidden(self.model, hidden, targets, device)
    }

    /// Independent sequences, one padded row each: the tokens where `masks[b][t] != 0` (all next
    /// tokens with `all = true`).
    pub fn sequences(&self, seqs: &[&[u32]], masks: &[&[u8]], all: bool) -> Scored {
        let layout = Layout::padded(seqs, self.pad_id);
        let targets = Targets::padded(&layout, seqs, masks, all);
        self.score(&layout, &targets)
    }

    /// Summed log-probs `[Σ responses]` of `(prompt, responses)` groups, group by group, response
    /// by response; laid out as [`Self::prefix_sharing`] says.
    pub fn groups(&self, groups: &[(&[u32], Vec<&[u32]>)]) -> Tensor<1> {
        if self.prefix_sharing {
            let layout = Layout::shared_prefix(groups, self.pad_id);
            let targets = Targets::shared_prefix(&layout, groups);
            return self.score(&layout, &targets).sums;
        }
        let mut full = Vec::new();
        let mut masks = Vec::new();
        for (prompt, responses) in groups {
            for r in responses {
                full.push([*prompt, *r].concat());
                masks.push([vec![0u8; prompt.len()], vec![1u8; r.len()]].concat());
            }
        }
        let seqs: Vec<&[u32]> = full.iter().map(Vec::as_slice).collect();
        let ms: Vec<&[u8]> = masks.iter().map(Vec::as_slice).collect();
        self.sequences(&seqs, &ms, false).sums
    }

    /// Summed log-probs `[N]` of `pairs` from a store: the prompt of `group` ⊕ response `candidate`
    /// (a weak negative is another group's candidate). Consecutive pairs of one group share a row
    /// when prefix sharing is on.
    pub fn pairs(&self, store: &GroupStore, pairs: &[(usize, usize)]) -> Tensor<1> {
        let mut groups: Vec<(&[u32], Vec<&[u32]>)> = Vec::new();
        let mut last = usize::MAX;
        for &(g, c) in pairs {
            if g != last {
                groups.push((store.group(g).prompt_ids(), Vec::new()));
                last = g;
            }
            groups.last_mut().expect("pushed above").1.push(store.candidate(c).ids());
        }
        self.groups(&groups)
    }

    /// [`Self::pairs`] copied to the host.
    pub fn pairs_host(&self, store: &GroupStore, pairs: &[(usize, usize)]) -> Vec<f32> {
        host_f32(self.pairs(store, pairs))
    }
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
    let tok: Tensor<1, Int> = Tensor::from_data(TensorData::new(targets.token.clone(), [n]), device);
    let token_logps = model.target_logps(picked, tok); // never the whole [N, V] on the CPU
    // Sum per owner with a one-hot [owners, N] matrix (a differentiable segment sum).
    let mut onehot = vec![0f32; targets.n_owners * n];
    for (i, &o) in targets.owner.iter().enumerate() {
        onehot[o * n + i] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [targets.n_owners, n]), device);
    let sums = onehot.matmul(token_logps.clone().reshape([n, 1])).reshape([targets.n_owners]);
    Scored { token_logps, sums }
}
