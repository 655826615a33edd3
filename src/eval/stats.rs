//! The numbers of an evaluation, as pure functions: pairwise win rate, the length-controlled win rate,
//! and percentile bootstrap intervals that resample prompts.
//!
//! # Formulas
//!
//! * **win** of answer a over answer b under a judge R: `w = 1[R(a) > R(b)] + ½·1[R(a) = R(b)]`;
//!   the **win rate** of a policy against the reference is the mean of w over pairs (policy sample j
//!   against reference sample j of the same prompt).
//! * **length-controlled win rate** (AlpacaEval 2.0, Dubois et al. 2024, without its per-instruction
//!   difficulty term, which needs many models): a logistic regression of the win on the length difference
//!   `logit P(w = 1) = a + b·tanh(Δ / sd(Δ))`, `Δ = len(policy answer) − len(reference answer)` in tokens,
//!   `sd` the sample standard deviation of Δ over the pairs (AlpacaEval's scaling: the tanh bounds
//!   the effect of very long answers). Ties are labels of ½ (the likelihood `y·log p + (1−y)·log(1−p)`
//!   takes fractional y). Fitted by Newton's method (IRLS) with a ridge `λ/2·(a² + b²)` so that a
//!   separable fit (every pair won) stays finite. Reported: **σ(a)**, the win rate the fit predicts at
//!   zero length difference.
//! * **bootstrap 95% interval**: `reps` resamples of the prompts with replacement (a seeded ChaCha8
//!   stream), the statistic recomputed on each; the interval is the 2.5% and 97.5% percentiles
//!   (nearest rank: element `round((reps − 1)·q)` of the sorted values).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The ridge of the length-controlled fit: small next to the number of pairs of any real evaluation,
/// enough to keep a separable fit finite (every pair won: σ(a) ≈ 1 − λ·a/n, not 1).
pub const LC_RIDGE: f64 = 0.01;

/// Win of `a` over `b`: 1, ½ on a tie, 0.
pub fn win(a: f64, b: f64) -> f64 {
    if a > b {
        1.0
    } else if a == b {
        0.5
    } else {
        0.0
    }
}

/// Pairwise win rate: mean over j of [`win`]`(policy[j], reference[j])` (NaN when empty).
pub fn win_rate(policy: &[f64], reference: &[f64]) -> f64 {
    let wins: Vec<f64> = policy.iter().zip(reference).map(|(&a, &b)| win(a, b)).collect();
    mean(&wins)
}

/// Arithmetic mean, NaN when empty.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// AlpacaEval's length feature: `tanh(Δ / sd(Δ))` with `sd` the sample standard deviation (n − 1);
/// all zeros when `sd` is 0 or undefined (fewer than two pairs).
pub fn length_feature(len_diff: &[f64]) -> Vec<f64> {
    let n = len_diff.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let m = mean(len_diff);
    let sd = (len_diff.iter().map(|d| (d - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    if sd.is_nan() || sd <= 0.0 {
        return vec![0.0; n];
    }
    len_diff.iter().map(|d| (d / sd).tanh()).collect()
}

/// log σ(t), stable for large |t|.
fn log_sigmoid(t: f64) -> f64 {
    if t >= 0.0 { -(-t).exp().ln_1p() } else { t - t.exp().ln_1p() }
}

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// Penalised log-likelihood of `logit p = a + b·x` for labels `y ∈ [0, 1]`.
fn objective(a: f64, b: f64, x: &[f64], y: &[f64], ridge: f64) -> f64 {
    let ll: f64 = x
        .iter()
        .zip(y)
        .map(|(&xi, &yi)| {
            let t = a + b * xi;
            yi * log_sigmoid(t) + (1.0 - yi) * log_sigmoid(-t)
        })
        .sum();
    ll - 0.5 * ridge * (a * a + b * b)
}

/// Fits `logit P(y = 1) = a + b·x` to labels `y ∈ [0, 1]` by damped Newton steps (IRLS) on the
/// ridge-penalised log-likelihood; returns `(a, b)`. A feature that is zero everywhere fits the
/// intercept alone (`b = 0`). `None` when there are no pairs or the fit does not converge.
pub fn logistic_fit(x: &[f64], y: &[f64], ridge: f64) -> Option<(f64, f64)> {
    if x.is_empty() || x.len() != y.len() {
        return None;
    }
    let with_slope = x.iter().any(|&v| v != 0.0);
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..200 {
        // Gradient and (negated) Hessian of the objective.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (-ridge * a, -ridge * b, ridge, 0.0, ridge);
        for (&xi, &yi) in x.iter().zip(y) {
            let p = sigmoid(a + b * xi);
            let w = p * (1.0 - p);
            ga += yi - p;
            gb += (yi - p) * xi;
            haa += w;
            hab += w * xi;
            hbb += w * xi * xi;
        }
        let (da, db) = if with_slope {
            let det = haa * hbb - hab * hab;
            if det.is_nan() || det.abs() <= 1e-300 {
                return None;
            }
            ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det)
        } else {
            if haa.is_nan() || haa <= 1e-300 {
                return None;
            }
            (ga / haa, 0.0)
        };
        if da.abs() < 1e-12 && db.abs() < 1e-12 {
            return Some((a, b));
        }
        // Damped: halve the step until the objective does not decrease.
        let f0 = objective(a, b, x, y, ridge);
        let mut t = 1.0;
        while t > 1e-10 && objective(a + t * da, b + t * db, x, y, ridge) < f0 - 1e-12 {
            t *= 0.5;
        }
        a += t * da;
        b += t * db;
        if !(a.is_finite() && b.is_finite()) {
            return None;
        }
    }
    Some((a, b))
}

/// The length-controlled win rate: σ(a) of [`logistic_fit`] of the wins (ties ½) on
/// [`length_feature`]`(len_diff)`. NaN when there are no pairs or the fit fails.
pub fn lc_win_rate(wins: &[f64], len_diff: &[f64], ridge: f64) -> f64 {
    match logistic_fit(&length_feature(len_diff), wins, ridge) {
        Some((a, _)) => sigmoid(a),
        None => f64::NAN,
    }
}

/// A point estimate and its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on all the prompts.
    pub estimate: f64,
    /// Lower bound: the 2.5th percentile of the resampled statistics (NaN without resamples).
    pub lo: f64,
    /// Upper bound: the 97.5th percentile of the resampled statistics (NaN without resamples).
    pub hi: f64,
}

/// The standard normal's quantile function Φ⁻¹(p) (statrs), e.g. 1.96 at p = 0.975.
pub fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(p)
}

/// The element at quantile `q` of sorted values (nearest rank, `round((n − 1)·q)`); NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `stat` on all `n` prompts, and its percentile bootstrap 95% interval over `reps` resamples of the
/// prompts (indices drawn with replacement from a ChaCha8 stream seeded with `seed`). Resamples on
/// which `stat` is not finite are left out; with none left (or `reps` = 0) the interval is NaN.
pub fn bootstrap(n: usize, reps: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> Interval {
    let all: Vec<usize> = (0..n).collect();
    let estimate = stat(&all);
    if n == 0 {
        return Interval { estimate, lo: f64::NAN, hi: f64::NAN };
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let mut values = Vec::with_capacity(reps);
    for _ in 0..reps {
        for i in idx.iter_mut() {
            *i = rng.random_range(0..n);
        }
        let v = stat(&idx);
        if v.is_finite() {
            values.push(v);
        }
    }
    values.sort_by(f64::total_cmp);
    Interval { estimate, lo: percentile(&values, 0.025), hi: percentile(&values, 0.975) }
}

/// Mean of the finite `values[i]` for `i` in `idx` (NaN if none): the statistic of a per-prompt
/// number under [`bootstrap`].
pub fn mean_at(values: &[f64], idx: &[usize]) -> f64 {
    let (mut s, mut k) = (0.0, 0usize);
    for &i in idx {
        if values[i].is_finite() {
            s += values[i];
            k += 1;
        }
    }
    if k == 0 { f64::NAN } else { s / k as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wins_count_ties_as_half() {
        assert_eq!((win(2.0, 1.0), win(1.0, 1.0), win(0.0, 1.0)), (1.0, 0.5, 0.0));
        assert_eq!(win_rate(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), 0.5);
        assert_eq!(win_rate(&[1.0, 1.0, 5.0, 5.0], &[0.0, 2.0, 1.0, 1.0]), 0.75);
        assert!(win_rate(&[], &[]).is_nan());
    }

    #[test]
    fn length_feature_is_tanh_of_the_difference_over_its_sample_sd() {
        // Δ = [1, −1]: mean 0, sample sd √2.
        let f = length_feature(&[1.0, -1.0]);
        assert!((f[0] - (1.0 / 2f64.sqrt()).tanh()).abs() < 1e-15 && (f[1] + f[0]).abs() < 1e-15);
        assert_eq!(length_feature(&[3.0, 3.0, 3.0]), vec![0.0; 3], "no spread: no feature");
        assert_eq!(length_feature(&[7.0]), vec![0.0]);
    }

    #[test]
    fn lc_win_rate_matches_hand_computed_fits() {
        // Identical answers: every label ½ → the fit stays at 0 → exactly ½.
        assert_eq!(lc_win_rate(&[0.5; 6], &[0.0; 6], LC_RIDGE), 0.5);
        assert_eq!(lc_win_rate(&[0.5; 4], &[3.0, -1.0, 0.0, 2.0], LC_RIDGE), 0.5);
        // No length difference, no ridge: the intercept-only MLE is logit(mean win).
        assert!((lc_win_rate(&[1.0, 1.0, 1.0, 0.0], &[0.0; 4], 0.0) - 0.75).abs() < 1e-12);
        // A balanced design x ∈ {+c, −c} (4 pairs each), unpenalised: the fit is saturated, so
        // p(+c) = 3/4 and p(−c) = 1/2 (the group means); a = (logit ¾ + logit ½)/2 = ln 3 / 2, and
        // σ(a) = √3 / (1 + √3) ≈ 0.634, against a raw win rate of 0.625.
        let d = [5.0, 5.0, 5.0, 5.0, -5.0, -5.0, -5.0, -5.0];
        let w = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let want = 3f64.sqrt() / (1.0 + 3f64.sqrt());
        assert!((lc_win_rate(&w, &d, 0.0) - want).abs() < 1e-10, "{} vs {want}", lc_win_rate(&w, &d, 0.0));
        // Ties as ½ labels: {1, 0} and {½, ½} give the same fit.
        let w2 = [1.0, 1.0, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5];
        assert!((lc_win_rate(&w2, &d, 0.0) - want).abs() < 1e-10);
        // Longer answers winning: a policy that wins only when longer is ½ at zero length difference.
        let d = [4.0, 4.0, -4.0, -4.0, 4.0, -4.0];
        let w = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        assert!((lc_win_rate(&w, &d, LC_RIDGE) - 0.5).abs() < 1e-9);
        // Separable (every pair won) stays finite under the ridge.
        let all = lc_win_rate(&[1.0; 10], &[1.0, 2.0, 0.0, -1.0, 3.0, 1.0, 0.0, 2.0, 1.0, 0.0], LC_RIDGE);
        assert!(all.is_finite() && all > 0.99 && all < 1.0, "{all}");
        assert!(lc_win_rate(&[], &[], LC_RIDGE).is_nan());
    }

    #[test]
    fn bootstrap_is_the_percentile_interval_of_resampled_prompts() {
        // Two prompts, values 0 and 1: a resample's mean is 0, ½ or 1 with probabilities ¼, ½, ¼,
        // so the 2.5% and 97.5% percentiles of many resamples are 0 and 1.
        let v = [0.0, 1.0];
        let ci = bootstrap(2, 2000, 7, |idx| mean_at(&v, idx));
        assert_eq!((ci.estimate, ci.lo, ci.hi), (0.5, 0.0, 1.0));
        // Constant values: a zero-width interval; the same seed: the same interval.
        let c = bootstrap(5, 100, 1, |idx| mean_at(&[2.0; 5], idx));
        assert_eq!((c.estimate, c.lo, c.hi), (2.0, 2.0, 2.0));
        let x = [0.3, -1.0, 2.5, 0.7, 1.1];
        let a = bootstrap(5, 500, 3, |idx| mean_at(&x, idx));
        assert_eq!(a, bootstrap(5, 500, 3, |idx| mean_at(&x, idx)));
        assert!(a.lo <= a.estimate && a.estimate <= a.hi && a.lo < a.hi);
        // NaN values are skipped in a mean; no prompts: NaN.
        assert_eq!(mean_at(&[1.0, f64::NAN, 3.0], &[0, 1, 2]), 2.0);
        assert!(bootstrap(0, 10, 0, |idx| mean_at(&[], idx)).estimate.is_nan());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<f64> = (0..101).map(f64::from).collect();
        assert_eq!((percentile(&s, 0.025), percentile(&s, 0.975), percentile(&s, 0.5)), (3.0, 98.0, 50.0));
        assert_eq!(percentile(&[4.0], 0.975), 4.0);
    }
}
