//! Preference data sampled from the world, UltraFeedback-style, and the weak negatives.
//!
//! For each prompt x:
//! 1. a candidate pool of `pool` distinct responses is drawn from π_ref(·|x) (the answers the
//!    annotators ever get to see for x; `pool = 0` means all M);
//! 2. `rounds` times, `k` distinct candidates are drawn uniformly from the pool and ranked by a
//!    Plackett-Luce draw on r*(x,·) (Gumbel-max; for k = 2 this is Bradley-Terry,
//!    P(a ≻ b) = σ(r*(x,a) − r*(x,b))). Rank 0 is the positive, ranks 1.. the strong negatives.
//!
//! Weak negatives — "answers written for other prompts". Every prompt indexes the same response
//! space `0..M`, so an answer written for prompt x' is a response id compared under x'. The weak
//! pool of x is therefore
//!     W(x) = { y : y was compared under some x' ≠ x } \ { y : y was compared under x },
//! i.e. responses x never saw in its own comparisons, scored under x. Each round of x draws
//! `max_weak` distinct ids from W(x) once, at data-generation time (fixed, like a built dataset);
//! a method using n weak negatives takes the first n, so the sweep's weak sets are nested.
//! When |W(x)| < n the missing slots are padding (mask 0).

use rand::seq::index;
use rand_distr::{Distribution, Gumbel};

use super::world::{World, rng, stream};

/// One annotated comparison.
#[derive(Clone, Debug)]
pub struct Round {
    /// The prompt x the candidates were ranked for.
    pub prompt: usize,
    /// Candidate ids, best first (index 0 = positive, the rest = strong negatives in rank order).
    pub ranked: Vec<usize>,
    /// Weak negative ids for this round, at most `max_weak`, in draw order.
    pub weak: Vec<usize>,
}

/// The dataset plus what each prompt saw.
#[derive(Clone, Debug)]
pub struct PrefData {
    /// Every annotated comparison: `rounds` per prompt, prompt by prompt.
    pub rounds: Vec<Round>,
    /// `[N, M]`: true where y was compared under x.
    pub seen: Vec<bool>,
    /// |W(x)| per prompt.
    pub weak_pool_sizes: Vec<usize>,
    /// How many responses each prompt saw.
    pub seen_counts: Vec<usize>,
}

/// Draws the preference data and weak negatives from the seed's data and weak streams.
pub fn sample(
    world: &World,
    pool: usize,
    rounds: usize,
    k: usize,
    max_weak: usize,
    seed: u64,
) -> anyhow::Result<PrefData> {
    let (n, m) = (world.n_prompts, world.n_responses);
    let pool = if pool == 0 || pool > m { m } else { pool };
    anyhow::ensure!(k >= 2, "--k (candidates per comparison) must be at least 2, got {k}");
    anyhow::ensure!(k <= pool, "--k = {k} exceeds the candidate pool of {pool} responses");
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    let gumbel = Gumbel::new(0.0, 1.0)?;
    let mut rng = rng(seed, stream::DATA);
    let mut rounds_out = Vec::with_capacity(n * rounds);
    let mut seen = vec![false; n * m];
    for x in 0..n {
        // Pool: `pool` draws without replacement from π_ref(·|x) (Gumbel-top-k).
        let logp = world.row(&world.ref_logp, x);
        let candidates = top_k(logp.iter().map(|l| l + gumbel.sample(&mut rng)).collect(), pool);
        for _ in 0..rounds {
            let picked: Vec<usize> = index::sample(&mut rng, pool, k).into_iter().map(|i| candidates[i]).collect();
            let r = world.row(&world.reward, x);
            let keys: Vec<f64> = picked.iter().map(|&y| r[y] + gumbel.sample(&mut rng)).collect();
            let ranked: Vec<usize> = top_k(keys, k).into_iter().map(|i| picked[i]).collect();
            for &y in &ranked {
                seen[x * m + y] = true;
            }
            rounds_out.push(Round { prompt: x, ranked, weak: Vec::new() });
        }
    }
    let seen_by_any: Vec<usize> = (0..m).map(|y| (0..n).filter(|&x| seen[x * m + y]).count()).collect();
    let mut weak_rng = rng_weak(seed);
    let mut weak_pool_sizes = Vec::with_capacity(n);
    let mut weak_pools = Vec::with_capacity(n);
    for x in 0..n {
        let own = |y: usize| seen[x * m + y];
        let pool_x: Vec<usize> = (0..m).filter(|&y| !own(y) && seen_by_any[y] > 0).collect();
        weak_pool_sizes.push(pool_x.len());
        weak_pools.push(pool_x);
    }
    for round in &mut rounds_out {
        let pool_x = &weak_pools[round.prompt];
        let take = max_weak.min(pool_x.len());
        round.weak = index::sample(&mut weak_rng, pool_x.len(), take).into_iter().map(|i| pool_x[i]).collect();
    }
    let seen_counts = (0..n).map(|x| (0..m).filter(|&y| seen[x * m + y]).count()).collect();
    Ok(PrefData { rounds: rounds_out, seen, weak_pool_sizes, seen_counts })
}

fn rng_weak(seed: u64) -> rand_chacha::ChaCha8Rng {
    rng(seed, stream::WEAK)
}

/// Indices of the `k` largest keys, largest first (ties broken by index, deterministic).
fn top_k(keys: Vec<f64>, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Number of prompts whose Bradley-Terry MLE over their compared responses exists (is finite):
/// the digraph with an edge loser → winner for every pair a round's ranking implies must be
/// strongly connected on the compared responses (Zermelo 1929; Ford 1957).
pub fn finite_bt_mle(data: &PrefData, n_prompts: usize, n_responses: usize) -> usize {
    let m = n_responses;
    let mut beats = vec![Vec::<(usize, usize)>::new(); n_prompts];
    for r in &data.rounds {
        for (i, &w) in r.ranked.iter().enumerate() {
            for &l in &r.ranked[i + 1..] {
                beats[r.prompt].push((l, w));
            }
        }
    }
    (0..n_prompts)
        .filter(|&x| {
            let nodes: Vec<usize> = (0..m).filter(|&y| data.seen[x * m + y]).collect();
            let forward: Vec<(usize, usize)> = beats[x].clone();
            let backward: Vec<(usize, usize)> = beats[x].iter().map(|&(a, b)| (b, a)).collect();
            nodes.len() < 2 || (reaches_all(&nodes, &forward, m) && reaches_all(&nodes, &backward, m))
        })
        .count()
}

/// Whether every node is reachable from `nodes[0]` along `edges`.
fn reaches_all(nodes: &[usize], edges: &[(usize, usize)], m: usize) -> bool {
    let mut seen = vec![false; m];
    let mut stack = vec![nodes[0]];
    seen[nodes[0]] = true;
    while let Some(a) = stack.pop() {
        for &(_, b) in edges.iter().filter(|e| e.0 == a) {
            if !seen[b] {
                seen[b] = true;
                stack.push(b);
            }
        }
    }
    nodes.iter().all(|&y| seen[y])
}
