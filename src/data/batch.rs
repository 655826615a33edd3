//! [`Batcher`]: epochs of seeded, length-bucketed batches of P prompts with their candidates and weak
//! negatives; its position is a small serialisable [`BatcherState`] so training resumes exactly.
//!
//! An epoch's plan is a pure function of (seed, epoch): shuffle the groups, sort them by length inside
//! windows of `bucket_batches × P`, cut batches of P, shuffle the batches. Weak negatives of batch b
//! depend only on (seed, epoch, b). So restoring `{epoch, next_batch}` replays the same stream.

use anyhow::{Result, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{BatchConfig, DataConfig, WeakConfig};
use super::store::{GroupStore, Role};
use super::weak::{WeakSampler, batch_rng, mix};

const ORDER: u64 = 1;
const WEAK: u64 = 2;

/// Where the batcher stands. Save it with a checkpoint; [`Batcher::restore`] continues from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// The epoch being handed out, counted from 0.
    pub epoch: u64,
    /// Index, within `epoch`, of the next batch to hand out.
    pub next_batch: usize,
    /// The data seed the batcher was made with (`data.seed`); a resume under another seed is refused.
    pub seed: u64,
    /// Number of groups in the store (a resume on different data is refused).
    pub groups: usize,
}

/// One group of a batch and the weak negatives drawn for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGroup {
    /// The group (index into the store) whose prompt this is.
    pub group: usize,
    /// Candidate indices (into the store) of responses to other prompts, scored under this prompt.
    pub weak: Vec<usize>,
}

/// One sequence to score: `prompt_ids(group) ++ ids(candidate)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem {
    /// The group (index into the store) whose prompt the candidate is scored under.
    pub group: usize,
    /// The candidate (index into the store); for a weak negative, a response written for another group.
    pub candidate: usize,
    /// Its part in the group's loss: positive, strong or weak negative.
    pub role: Role,
}

/// One batch: P groups (the epoch's last one may have fewer unless `drop_last`), each with its weak
/// negatives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The epoch the batch belongs to.
    pub epoch: u64,
    /// The batch's position within its epoch.
    pub index: usize,
    /// Its groups, in the order their sequences are laid out.
    pub groups: Vec<BatchGroup>,
}

impl Batch {
    /// Every sequence of the batch, group by group: positive, strong negatives, weak negatives.
    pub fn items(&self, store: &GroupStore) -> Vec<BatchItem> {
        let mut out = Vec::new();
        for bg in &self.groups {
            for c in store.group(bg.group).candidates() {
                out.push(BatchItem { group: bg.group, candidate: c.index(), role: c.role() });
            }
            out.extend(bg.weak.iter().map(|&c| BatchItem { group: bg.group, candidate: c, role: Role::Weak }));
        }
        out
    }
}

/// Hands out batches over a [`GroupStore`] epoch after epoch: seeded shuffling, length bucketing
/// and weak-negative draws, restartable from a [`BatcherState`].
pub struct Batcher<'a> {
    store: &'a GroupStore,
    cfg: BatchConfig,
    seed: u64,
    weak: WeakSampler<'a>,
    state: BatcherState,
    /// The current epoch's batches (group indices).
    plan: Vec<Vec<usize>>,
}

impl<'a> Batcher<'a> {
    /// A batcher at the start of epoch 0, with `cfg.batch`, `cfg.weak` and `cfg.seed`.
    pub fn new(store: &'a GroupStore, cfg: &DataConfig) -> Result<Self> {
        Self::with(store, &cfg.batch, &cfg.weak, cfg.seed)
    }

    /// A batcher at the start of epoch 0 from explicit batch and weak-negative settings and seed.
    /// Errors when the store is empty, `prompts_per_batch` is 0, or `drop_last` leaves no full
    /// batch.
    pub fn with(store: &'a GroupStore, batch: &BatchConfig, weak: &WeakConfig, seed: u64) -> Result<Self> {
        ensure!(!store.is_empty(), "no groups to batch: every row was dropped (see the data report)");
        ensure!(batch.prompts_per_batch > 0, "batch.prompts_per_batch must be at least 1");
        ensure!(
            !(batch.drop_last && store.len() < batch.prompts_per_batch),
            "{} groups make no full batch of {} with drop_last",
            store.len(),
            batch.prompts_per_batch
        );
        let state = BatcherState { epoch: 0, next_batch: 0, seed, groups: store.len() };
        let mut b =
            Self { store, cfg: batch.clone(), seed, weak: WeakSampler::new(store, weak), state, plan: Vec::new() };
        b.plan = b.plan_epoch(0);
        Ok(b)
    }

    /// Where the batcher stands: save it with a checkpoint, hand it to [`Batcher::restore`] to resume.
    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// Continues from a saved state (same data and seed).
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        if state.seed != self.seed || state.groups != self.store.len() {
            bail!(
                "batcher state is for seed {} and {} groups, but this run has seed {} and {} groups",
                state.seed,
                state.groups,
                self.seed,
                self.store.len()
            );
        }
        let plan = self.plan_epoch(state.epoch);
        ensure!(state.next_batch <= plan.len(), "batcher state points past the end of epoch {}", state.epoch);
        self.plan = plan;
        self.state = state;
        Ok(())
    }

    /// Number of batches in an epoch (the same for every epoch).
    pub fn batches_per_epoch(&self) -> usize {
        self.plan.len()
    }

    /// The next batch; after an epoch's last batch the next epoch begins (check `state().epoch`).
    pub fn next_batch(&mut self) -> Batch {
        if self.state.next_batch >= self.plan.len() {
            self.state.epoch += 1;
            self.state.next_batch = 0;
            self.plan = self.plan_epoch(self.state.epoch);
        }
        let index = self.state.next_batch;
        let groups = &self.plan[index];
        let mut rng = batch_rng(self.seed, self.state.epoch, index as u64, WEAK);
        let weak = self.weak.sample_batch(groups, &mut rng);
        let groups = groups.iter().zip(weak).map(|(&group, weak)| BatchGroup { group, weak }).collect();
        self.state.next_batch += 1;
        Batch { epoch: self.state.epoch, index, groups }
    }

    /// The batches (group indices) of `epoch`.
    pub fn plan_epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let p = self.cfg.prompts_per_batch;
        let mut order: Vec<usize> = (0..self.store.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, epoch, ORDER]));
        if self.cfg.shuffle {
            order.shuffle(&mut rng);
        }
        if self.cfg.bucket_batches > 1 {
            let lens: Vec<usize> = (0..self.store.len()).map(|g| self.store.group(g).max_len()).collect();
            for window in order.chunks_mut(p * self.cfg.bucket_batches) {
                window.sort_by_key(|&g| std::cmp::Reverse(lens[g]));
            }
        }
        let mut batches: Vec<Vec<usize>> = order.chunks(p).map(<[usize]>::to_vec).collect();
        if self.cfg.drop_last && batches.last().is_some_and(|b| b.len() < p) {
            batches.pop();
        }
        if self.cfg.shuffle {
            batches.shuffle(&mut rng);
        }
        batches
    }
}
