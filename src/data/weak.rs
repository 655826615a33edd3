//! Weak negatives: for each prompt, K responses written for *other* prompts, to be scored under it.
//!
//! Rules: a weak negative never comes from a group with the same prompt text (compared by
//! `Prompt::key`, not by row), never repeats within a group, and fits `max_length` together with the
//! prompt it is scored under. The draw is exact (K) whenever that many eligible responses exist, and a
//! function of the seed and the batch position only.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{WeakConfig, WeakScope, WeakSource};
use super::store::{GroupStore, Role};

/// Draws weak negatives from a store.
pub struct WeakSampler<'a> {
    store: &'a GroupStore,
    cfg: WeakConfig,
    /// Candidates whose role matches `cfg.source`.
    pool: Vec<u32>,
}

/// A 64-bit mix of several numbers (SplitMix64 steps), for seeding per-batch generators.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for &p in parts {
        h ^= p;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h = z ^ (z >> 31);
    }
    h
}

impl<'a> WeakSampler<'a> {
    /// A sampler over the candidates of `store` whose role `cfg.source` allows.
    pub fn new(store: &'a GroupStore, cfg: &WeakConfig) -> Self {
        let wanted = |r: Role| match cfg.source {
            WeakSource::Chosen => r == Role::Positive,
            WeakSource::Rejected => r == Role::Strong,
            WeakSource::Both => true,
        };
        let pool = store.candidates().filter(|c| wanted(c.role())).map(|c| c.index() as u32).collect();
        Self { store, cfg: cfg.clone(), pool }
    }

    fn source_ok(&self, role: Role) -> bool {
        match self.cfg.source {
            WeakSource::Chosen => role == Role::Positive,
            WeakSource::Rejected => role == Role::Strong,
            WeakSource::Both => role != Role::Weak,
        }
    }

    /// May candidate `c` be a weak negative for group `g`?
    pub fn eligible(&self, g: usize, c: usize) -> bool {
        let group = self.store.group(g);
        let cand = self.store.candidate(c);
        let owner = self.store.group(cand.group());
        owner.prompt_key() != group.prompt_key()
            && self.source_ok(cand.role())
            && self.store.max_length().is_none_or(|m| group.prompt_ids().len() + cand.ids().len() <= m)
    }

    /// Weak negatives (candidate indices) for each group of a batch, in the batch's order.
    pub fn sample_batch(&self, groups: &[usize], rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        if self.cfg.k == 0 {
            return vec![Vec::new(); groups.len()];
        }
        match self.cfg.scope {
            WeakScope::InBatch => {
                let batch_pool: Vec<usize> =
                    groups.iter().flat_map(|&g| self.store.group(g).candidate_indices()).collect();
                groups.iter().map(|&g| self.pick_from(g, &batch_pool, rng)).collect()
            }
            WeakScope::Dataset => groups.iter().map(|&g| self.pick_dataset(g, rng)).collect(),
        }
    }

    /// Up to K distinct eligible candidates from a small pool: a partial Fisher–Yates over the eligible.
    fn pick_from(&self, g: usize, pool: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut eligible: Vec<usize> = pool.iter().copied().filter(|&c| self.eligible(g, c)).collect();
        eligible.sort_unstable();
        eligible.dedup();
        let k = self.cfg.k.min(eligible.len());
        let (picked, _) = eligible.partial_shuffle(rng, k);
        picked.to_vec()
    }

    /// K distinct eligible candidates from the whole dataset: rejection sampling, then (if the eligible
    /// ones are rare) a scan from a random start so the count is exact whenever possible.
    fn pick_dataset(&self, g: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let n = self.pool.len();
        // Never more than the dataset holds, however large `k` is.
        let k = self.cfg.k.min(n);
        let mut out: Vec<usize> = Vec::with_capacity(k);
        let mut seen = std::collections::HashSet::with_capacity(k);
        if n == 0 {
            return out;
        }
        for _ in 0..k * 16 {
            if out.len() == k {
                return out;
            }
            let c = self.pool[rng.random_range(0..n)] as usize;
            if !seen.contains(&c) && self.eligible(g, c) {
                seen.insert(c);
                out.push(c);
            }
        }
        let start = rng.random_range(0..n);
        for i in 0..n {
            if out.len() == k {
                break;
            }
            let c = self.pool[(start + i) % n] as usize;
            if !seen.contains(&c) && self.eligible(g, c) {
                seen.insert(c);
                out.push(c);
            }
        }
        out
    }
}

/// A fresh generator for (seed, epoch, batch).
pub(crate) fn batch_rng(seed: u64, epoch: u64, batch: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[seed, epoch, batch, stream]))
}
