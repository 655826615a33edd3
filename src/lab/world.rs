//! The tabular world: N prompts × M responses, a reference policy and a true reward.
//!
//! All prompts share one response index space `0..M`. Row-major `[N, M]` vectors throughout:
//! entry `x * M + y` belongs to prompt `x`, response `y`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// How the reference policy π_ref(·|x) is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RefPolicy {
    /// π_ref(y|x) = 1/M.
    Uniform,
    /// π_ref(·|x) = softmax(g), g ~ N(0, ref_sd²) per (x, y).
    Random,
}

/// Random-number streams of one seed, one per purpose, so changing one stage never shifts another.
pub mod stream {
    /// Stream of the world: π_ref and r*.
    pub const WORLD: u64 = 1;
    /// Stream of the preference data: candidate pools and rankings.
    pub const DATA: u64 = 2;
    /// Stream of the weak-negative draws.
    pub const WEAK: u64 = 3;
    /// Initialisation `i` uses stream `INIT + i`.
    pub const INIT: u64 = 1000;
}

/// A seeded ChaCha8 generator on one stream.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// The world's fixed quantities.
#[derive(Clone, Debug)]
pub struct World {
    /// Prompts N.
    pub n_prompts: usize,
    /// Responses M: the response space every prompt shares.
    pub n_responses: usize,
    /// log π_ref(y|x), `[N, M]`, each row normalised.
    pub ref_logp: Vec<f64>,
    /// r*(x, y), `[N, M]`. Preferences follow Bradley-Terry / Plackett-Luce on r* (temperature 1).
    pub reward: Vec<f64>,
}

impl World {
    /// Draws π_ref and r* ~ N(0, reward_sd²) from the seed's world stream.
    pub fn generate(
        n_prompts: usize,
        n_responses: usize,
        ref_policy: RefPolicy,
        ref_sd: f64,
        reward_sd: f64,
        seed: u64,
    ) -> anyhow::Result<World> {
        anyhow::ensure!(n_prompts >= 1, "--n-prompts must be at least 1");
        anyhow::ensure!(n_responses >= 2, "--n-responses must be at least 2");
        anyhow::ensure!(reward_sd > 0.0 && reward_sd.is_finite(), "--reward-sd must be > 0");
        anyhow::ensure!(ref_sd >= 0.0 && ref_sd.is_finite(), "--ref-sd must be >= 0");
        let mut rng = rng(seed, stream::WORLD);
        let n = n_prompts * n_responses;
        let unit = Normal::new(0.0, 1.0)?;
        let reward: Vec<f64> = (0..n).map(|_| reward_sd * unit.sample(&mut rng)).collect();
        let mut ref_logp: Vec<f64> = match ref_policy {
            RefPolicy::Uniform => vec![0.0; n],
            RefPolicy::Random => (0..n).map(|_| ref_sd * unit.sample(&mut rng)).collect(),
        };
        for row in ref_logp.chunks_mut(n_responses) {
            log_normalise(row);
        }
        Ok(World { n_prompts, n_responses, ref_logp, reward })
    }

    /// Row `x` of an `[N, M]` vector.
    pub fn row<'a>(&self, v: &'a [f64], x: usize) -> &'a [f64] {
        &v[x * self.n_responses..(x + 1) * self.n_responses]
    }
}

/// In place: `v ← v − logsumexp(v)`.
pub fn log_normalise(v: &mut [f64]) {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln();
    for a in v.iter_mut() {
        *a -= lse;
    }
}
