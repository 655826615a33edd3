//! From per-prompt evaluations to the verdict: means with bootstrap 95% intervals (resampling
//! seeds, then prompts, the same draws for every method so differences are paired), gold reward at
//! matched KL, the slope-1 fit (ε̂ normalised by the true reward's own variance, the slope of r on
//! r*), the power reached, `results.json`, `report.md` and the plots.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use super::config::{DemoConfig, Method};
use super::evaluate::PointEval;

/// One run's evaluations along training and its training curve.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunEval {
    /// The method's name (`methods[].name` of the configuration).
    pub method: String,
    /// Training seed of the run.
    pub seed: u64,
    /// The evaluations at evenly spaced points of the run, in step order.
    pub points: Vec<PointEval>,
    /// `(step, loss, rewards/accuracies)` per optimiser step.
    #[serde(deserialize_with = "nan_curve")]
    pub curve: Vec<(usize, f64, f64)>,
    /// Wall-clock seconds of the run, training and its evaluations together.
    pub train_seconds: f64,
    /// Sampled + trained tokens: the data's answers to the training prompts (offline) or the
    /// rounds' samples (online), plus the prompt + response tokens scored in training.
    #[serde(default)]
    pub compute_tokens: usize,
}

/// JSON writes NaN as `null`; read it back as NaN.
fn nan_curve<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(usize, f64, f64)>, D::Error> {
    let v: Vec<(usize, Option<f64>, Option<f64>)> = serde::Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|(s, a, b)| (s, a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN))).collect())
}

/// A mean and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Estimate {
    /// The point estimate, on every seed and prompt (no resampling).
    pub mean: f64,
    /// The 2.5th percentile of the bootstrap resamples (NaN when none is finite).
    pub lo: f64,
    /// The 97.5th percentile of the bootstrap resamples (NaN when none is finite).
    pub hi: f64,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.mean.is_finite() {
            return write!(f, "—");
        }
        if !self.lo.is_finite() || self.hi - self.lo == 0.0 {
            return write!(f, "{:.3}", self.mean);
        }
        write!(f, "{:.3} [{:.3}, {:.3}]", self.mean, self.lo, self.hi)
    }
}

type Metric = fn(&PointEval) -> &Vec<f64>;
const METRICS: [(&str, Metric); 7] = [
    ("gold", |p| &p.gold),
    ("kl", |p| &p.kl),
    ("kl_per_token", |p| &p.kl_per_token),
    ("win_rate", |p| &p.win),
    ("pearson", |p| &p.pearson),
    ("eps_hat", |p| &p.eps),
    ("length", |p| &p.length),
];

/// Seeds and prompts drawn with replacement (identity for the point estimate).
struct Draw {
    seeds: Vec<usize>,
    prompts: Vec<usize>,
}

impl Draw {
    fn identity(s: usize, p: usize) -> Draw {
        Draw { seeds: (0..s).collect(), prompts: (0..p).collect() }
    }
    fn random(s: usize, p: usize, rng: &mut ChaCha8Rng) -> Draw {
        Draw {
            seeds: (0..s).map(|_| rng.random_range(0..s)).collect(),
            prompts: (0..p).map(|_| rng.random_range(0..p)).collect(),
        }
    }
    /// Mean of `v[seed][prompt]` over the draw, skipping NaN.
    fn mean(&self, v: &[&Vec<f64>]) -> f64 {
        let (mut s, mut n) = (0.0, 0usize);
        for &si in &self.seeds {
            for &pi in &self.prompts {
                let x = v[si][pi];
                if x.is_finite() {
                    s += x;
                    n += 1;
                }
            }
        }
        if n == 0 { f64::NAN } else { s / n as f64 }
    }
}

fn interval(point: f64, mut reps: Vec<f64>) -> Estimate {
    reps.retain(|x| x.is_finite());
    if reps.is_empty() {
        return Estimate { mean: point, lo: f64::NAN, hi: f64::NAN };
    }
    reps.sort_by(f64::total_cmp);
    let q = |f: f64| reps[((reps.len() - 1) as f64 * f).round() as usize];
    Estimate { mean: point, lo: q(0.025), hi: q(0.975) }
}

/// Gold reward at KL `k` on the curve through `pts` (KL, gold), linear between points, flat beyond.
fn gold_at(pts: &[(f64, f64)], k: f64) -> f64 {
    let mut p: Vec<(f64, f64)> = pts.iter().copied().filter(|q| q.0.is_finite() && q.1.is_finite()).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    if p.is_empty() {
        return f64::NAN;
    }
    if k <= p[0].0 {
        return p[0].1;
    }
    for w in p.windows(2) {
        if k <= w[1].0 {
            let t = if w[1].0 > w[0].0 { (k - w[0].0) / (w[1].0 - w[0].0) } else { 1.0 };
            return w[0].1 + t * (w[1].1 - w[0].1);
        }
    }
    p.last().unwrap().1
}

/// The least-squares slope of r on r* after centring both within each prompt (the per-prompt
/// constant c(x) is free), pooled over the drawn seeds and prompts: 1 on the slope-1 line, 0 for
/// the reference. `r[seed][prompt][k]`, `t[prompt][k]`.
fn centred_slope(d: &Draw, r: &[&Vec<Vec<f64>>], t: &[Vec<f64>]) -> f64 {
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &si in &d.seeds {
        for &pi in &d.prompts {
            let (Some(r), Some(t)) = (r[si].get(pi), t.get(pi)) else { return f64::NAN };
            if r.len() != t.len() || r.is_empty() {
                return f64::NAN;
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (mr, mt) = (mean(r), mean(t));
            for (a, b) in r.iter().zip(t) {
                sxy += (a - mr) * (b - mt);
                sxx += (b - mt) * (b - mt);
            }
        }
    }
    if sxx > 0.0 { sxy / sxx } else { f64::NAN }
}

/// Every metric at one evaluation point, averaged over seeds and prompts, with its interval.
#[derive(Debug, Serialize)]
pub struct PointSummary {
    /// Training step of the point (0 for the reference).
    pub step: usize,
    /// Each metric's estimate, by name: `gold`, `kl`, `kl_per_token`, `win_rate`, `pearson`,
    /// `eps_hat`, `eps_hat_norm` (ε̂ / the reference's ε̂, which is Var_k(r*): the fraction of the
    /// true reward's variance the learned reward misses), `slope` (of centred r on centred r*),
    /// `length`; with `eval.fit_prompts` > 0 also `fit_pearson`, `fit_eps_hat`,
    /// `fit_eps_hat_norm`, `fit_slope` on those training prompts.
    pub stats: BTreeMap<String, Estimate>,
}

/// The power calculation that sized the run, and what the run reached.
#[derive(Debug, Serialize)]
pub struct PowerReport {
    /// Where the pilot's standard error comes from.
    pub pilot: String,
    /// Prompt × seed units of this run (held-out prompts × seeds).
    pub units: usize,
    /// Units the plan says are needed to detect `effect` with probability `power`.
    pub units_needed: f64,
    /// The effect to detect and the power asked for.
    pub effect: f64,
    /// The probability of detecting `effect`.
    pub power: f64,
    /// The standard error the plan expects with this run's units.
    pub expected_se: f64,
    /// The minimum detectable effect the plan expects.
    pub expected_mde: f64,
    /// Per comparison: (method, standard error reached = the 95 % interval's width / 3.92, its MDE).
    pub reached: Vec<(String, f64, f64)>,
}

/// A method against the DPO baseline: paired differences (method − baseline) with bootstrap
/// intervals.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The method compared.
    pub method: String,
    /// The baseline: the first method whose loss is `dpo` with the method's β, or the second name
    /// of a `compare` pair.
    pub baseline: String,
    /// The KL both reach (the smaller of the two largest mean KLs).
    pub matched_kl: f64,
    /// Gold(method) − gold(baseline) at `matched_kl`, on the mean frontiers.
    pub gold_at_matched_kl: Estimate,
    /// At the end of training: ε̂(method) − ε̂(baseline) (negative: closer to slope-1).
    pub eps_hat: Estimate,
    /// At the end of training: Pearson(r, r*)(method) − Pearson(r, r*)(baseline).
    pub pearson: Estimate,
    /// At the end of training: win rate vs the reference, method − baseline.
    pub win_rate: Estimate,
    /// At the end of training: KL per answer (nats), method − baseline.
    pub kl: Estimate,
}

/// Everything `epa demo` concludes (`results.json`).
#[derive(Debug, Serialize)]
pub struct Results {
    /// The command line that ran the demo.
    pub command: String,
    /// The configuration the results come from.
    pub config: DemoConfig,
    /// Statistics of the generated data: prompt counts, answers per prompt, mean gold reward, how
    /// often the chosen answer is the gold-best one, seconds.
    pub data: BTreeMap<String, f64>,
    /// The reference model's own point (its samples in the data: KL 0, win rate ½).
    pub reference: PointSummary,
    /// Method name → its summaries at every evaluation point.
    pub methods: BTreeMap<String, Vec<PointSummary>>,
    /// Every other method against the DPO baseline (empty without one).
    pub comparisons: Vec<Comparison>,
    /// Method name → mean wall-clock seconds of one run (over seeds).
    pub train_seconds: BTreeMap<String, f64>,
    /// Method name → mean compute of one run: sampled + trained tokens (over seeds).
    pub compute_tokens: BTreeMap<String, f64>,
    /// The power calculation and what the run reached (when the configuration has a plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerReport>,
    /// The verdict, one sentence per comparison and criterion (gold reward at matched KL, ε̂).
    pub verdict: Vec<String>,
}

/// The first `dpo` method with `m`'s β: `m`'s baseline (none for that method itself).
fn baseline_of(methods: &[Method], cfg: &DemoConfig, m: usize) -> Option<usize> {
    let beta = |i: usize| methods[i].beta(&cfg.train);
    let b = methods.iter().enumerate().position(|(i, x)| x.loss == "dpo" && beta(i) == beta(m))?;
    (b != m).then_some(b)
}

/// Summaries with intervals. `runs[m][s]` is method `m`'s run with seed `s` (every run has the same
/// evaluation steps); `reference` is the reference model's own point; `truth` holds r* of the
/// held-out and the fit candidates ([`super::evaluate::Judge::truth`]).
pub fn summarise(
    cfg: &DemoConfig,
    command: &str,
    data: BTreeMap<String, f64>,
    reference: &PointEval,
    runs: &[Vec<RunEval>],
    truth: (&[Vec<f64>], &[Vec<f64>]),
) -> Results {
    let n_seeds = cfg.seeds.len();
    let n_prompts = reference.gold.len();
    let n_fit = reference.fit_eps.len();
    let mut rng = ChaCha8Rng::seed_from_u64(20_250_713);
    let mut draws = vec![Draw::identity(n_seeds, n_prompts)];
    draws.extend((0..cfg.eval.bootstrap).map(|_| Draw::random(n_seeds, n_prompts, &mut rng)));
    // The fit prompts are other prompts: their own draws (seeds and fit prompts).
    let mut fit_draws = vec![Draw::identity(n_seeds, n_fit)];
    if n_fit > 0 {
        fit_draws.extend((0..cfg.eval.bootstrap).map(|_| Draw::random(n_seeds, n_fit, &mut rng)));
    }
    // stat(d, m, i, metric): the mean of a metric at point i of method m under draw d (m = None: reference).
    let value = |d: &Draw, m: Option<usize>, i: usize, f: Metric| -> f64 {
        match m {
            None => d.mean(&vec![f(reference); n_seeds]),
            Some(m) => d.mean(&runs[m].iter().map(|r| f(&r.points[i])).collect::<Vec<_>>()),
        }
    };
    let points = |m: Option<usize>, i: usize| -> Vec<&PointEval> {
        match m {
            None => vec![reference; n_seeds],
            Some(m) => runs[m].iter().map(|r| &r.points[i]).collect(),
        }
    };
    let estimate = |draws: &[Draw], stat: &dyn Fn(&Draw) -> f64| -> Estimate {
        interval(stat(&draws[0]), draws[1..].iter().map(stat).collect())
    };
    let summary = |m: Option<usize>, i: usize| -> PointSummary {
        let mut stats: BTreeMap<String, Estimate> =
            METRICS.iter().map(|&(name, f)| (name.to_string(), estimate(&draws, &|d| value(d, m, i, f)))).collect();
        let pts = points(m, i);
        let eps: Metric = |p| &p.eps;
        stats.insert("eps_hat_norm".into(), estimate(&draws, &|d| value(d, m, i, eps) / value(d, None, 0, eps)));
        let rewards: Vec<&Vec<Vec<f64>>> = pts.iter().map(|p| &p.rewards).collect();
        stats.insert("slope".into(), estimate(&draws, &|d| centred_slope(d, &rewards, truth.0)));
        if n_fit > 0 {
            let fit: Vec<&Vec<f64>> = pts.iter().map(|p| &p.fit_eps).collect();
            let fit_ref = vec![&reference.fit_eps; n_seeds];
            let pearson: Vec<&Vec<f64>> = pts.iter().map(|p| &p.fit_pearson).collect();
            let fit_rewards: Vec<&Vec<Vec<f64>>> = pts.iter().map(|p| &p.fit_rewards).collect();
            stats.insert("fit_pearson".into(), estimate(&fit_draws, &|d| d.mean(&pearson)));
            stats.insert("fit_eps_hat".into(), estimate(&fit_draws, &|d| d.mean(&fit)));
            stats.insert("fit_eps_hat_norm".into(), estimate(&fit_draws, &|d| d.mean(&fit) / d.mean(&fit_ref)));
            stats.insert("fit_slope".into(), estimate(&fit_draws, &|d| centred_slope(d, &fit_rewards, truth.1)));
        }
        let step = m.map_or(0, |m| runs[m][0].points[i].step);
        PointSummary { step, stats }
    };
    let frontier = |d: &Draw, m: usize| -> Vec<(f64, f64)> {
        let gold: Metric = |p| &p.gold;
        let kl: Metric = |p| &p.kl;
        let mut pts = vec![(0.0, value(d, None, 0, gold))];
        pts.extend((0..runs[m][0].points.len()).map(|i| (value(d, Some(m), i, kl), value(d, Some(m), i, gold))));
        pts
    };
    let methods: BTreeMap<String, Vec<PointSummary>> = cfg
        .methods
        .iter()
        .enumerate()
        .map(|(m, meth)| (meth.name.clone(), (0..runs[m][0].points.len()).map(|i| summary(Some(m), i)).collect()))
        .collect();
    let mut comparisons = Vec::new();
    let mut verdict = Vec::new();
    {
        let index = |name: &str| cfg.methods.iter().position(|m| m.name == name).expect("validated");
        let pairs = (0..cfg.methods.len())
            .filter_map(|m| Some((m, baseline_of(&cfg.methods, cfg, m)?)))
            .chain(cfg.compare.iter().map(|[a, b]| (index(a), index(b))));
        for (m, base) in pairs {
            let meth = &cfg.methods[m];
            let max_kl = |m: usize| frontier(&draws[0], m).iter().map(|p| p.0).fold(0.0, f64::max);
            let k = max_kl(m).min(max_kl(base));
            let gold_diff = |d: &Draw| gold_at(&frontier(d, m), k) - gold_at(&frontier(d, base), k);
            let last = |m: usize| runs[m][0].points.len() - 1;
            let diff = |f: Metric| {
                let at = |d: &Draw| value(d, Some(m), last(m), f) - value(d, Some(base), last(base), f);
                interval(at(&draws[0]), draws[1..].iter().map(at).collect())
            };
            let c = Comparison {
                method: meth.name.clone(),
                baseline: cfg.methods[base].name.clone(),
                matched_kl: k,
                gold_at_matched_kl: interval(gold_diff(&draws[0]), draws[1..].iter().map(gold_diff).collect()),
                eps_hat: diff(|p| &p.eps),
                pearson: diff(|p| &p.pearson),
                win_rate: diff(|p| &p.win),
                kl: diff(|p| &p.kl),
            };
            let sign = |s: &Estimate, better_if_positive: bool, what: &str| {
                let (good, bad) = if better_if_positive { (s.lo > 0.0, s.hi < 0.0) } else { (s.hi < 0.0, s.lo > 0.0) };
                if good {
                    format!("{} beats {} on {what}", c.method, c.baseline)
                } else if bad {
                    format!("{} loses to {} on {what}", c.method, c.baseline)
                } else {
                    format!("no significant difference between {} and {} on {what}", c.method, c.baseline)
                }
            };
            verdict.push(format!(
                "{} (gold-reward difference at KL {:.2}: {}).",
                sign(&c.gold_at_matched_kl, true, "gold reward at matched KL"),
                k,
                c.gold_at_matched_kl
            ));
            verdict.push(format!(
                "{} (ε̂ difference at the end: {}).",
                sign(&c.eps_hat, false, "slope-1 error ε̂"),
                c.eps_hat
            ));
            comparisons.push(c);
        }
    }
    let per_run = |f: fn(&RunEval) -> f64| -> BTreeMap<String, f64> {
        let mean = |m: usize| runs[m].iter().map(f).sum::<f64>() / n_seeds as f64;
        cfg.methods.iter().enumerate().map(|(m, meth)| (meth.name.clone(), mean(m))).collect()
    };
    let train_seconds = per_run(|r| r.train_seconds);
    let compute_tokens = per_run(|r| r.compute_tokens as f64);
    let power = cfg.power.as_ref().map(|p| {
        let units = n_prompts * n_seeds;
        let expected_se = p.expected_se(n_prompts, n_seeds);
        let reached = comparisons
            .iter()
            .map(|c| {
                let se = (c.gold_at_matched_kl.hi - c.gold_at_matched_kl.lo) / (2.0 * 1.959_963_984_540_054);
                (c.method.clone(), se, p.mde(se))
            })
            .collect();
        PowerReport {
            pilot: p.pilot.clone(),
            units,
            units_needed: p.units_needed(),
            effect: p.effect,
            power: p.power,
            expected_se,
            expected_mde: p.mde(expected_se),
            reached,
        }
    });
    if n_seeds == 1 {
        verdict.push(
            "One seed: a demonstration, not a verdict (a one-seed rerun of the demo on another machine reversed \
             its gold-reward comparison; `--preset study` is sized for one)."
                .into(),
        );
    }
    Results {
        command: command.to_string(),
        config: cfg.clone(),
        data,
        reference: summary(None, 0),
        methods,
        comparisons,
        train_seconds,
        compute_tokens,
        power,
        verdict,
    }
}

/// `report.md`.
pub fn markdown(r: &Results, reference: &PointEval, runs: &[Vec<RunEval>]) -> String {
    let c = &r.config;
    let mut s = String::new();
    s.push_str("# EPA vs DPO on a real pretrained LM with a known gold reward\n\n");
    s.push_str(&format!("Command: `{}`\n\n", r.command));
    s.push_str(&format!(
        "Preset `{}`: model `{}`; {} training and {} held-out prompts (\"Write one sentence about {{topic}}.\"), \
         {} answers each sampled from the reference (temperature {}, top-p {}, ≤ {} tokens); labels: Plackett-Luce \
         on R/τ with τ = {} (r* = R/τ); {} steps × {} prompts, lr {}, β = {} unless a method sets its own, {}; \
         seeds {:?}; {} bootstrap resamples (seeds, then prompts). Full configuration: `config.toml`.\n\n",
        c.preset,
        c.model,
        c.data.train_prompts,
        c.data.held_out_prompts,
        c.data.samples_per_prompt,
        c.data.temperature,
        c.data.top_p,
        c.data.max_new_tokens,
        c.data.label_temperature,
        c.train.steps,
        c.train.prompts_per_batch,
        c.train.lr,
        c.train.beta,
        if c.train.lora_rank > 0 {
            format!("LoRA rank {}", c.train.lora_rank)
        } else if c.train.train_last_layers > 0 {
            format!("top {} layers trained", c.train.train_last_layers)
        } else {
            "full fine-tune".to_string()
        },
        c.seeds,
        c.eval.bootstrap,
    ));
    s.push_str("| method | loss | β | strong negatives | weak negatives | data |\n|---|---|---|---|---|---|\n");
    for m in &c.methods {
        let data = match &m.online {
            None => "the reference's answers (offline)".to_string(),
            Some(o) => format!("online, {} rounds, {:?}", o.rounds, o.pairing),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {data} |\n",
            m.name,
            m.loss,
            m.beta(&c.train),
            m.strong,
            m.weak
        ));
    }
    s.push_str("\n## Verdict\n\n");
    if r.verdict.is_empty() {
        s.push_str("(no DPO baseline among the methods)\n");
    }
    for v in &r.verdict {
        s.push_str(&format!("- {v}\n"));
    }
    s.push_str("\n## Data\n\n");
    for (k, v) in &r.data {
        s.push_str(&format!("- {k}: {v:.3}\n"));
    }
    s.push_str("\n## End of training (held-out prompts; mean [95% CI])\n\n");
    s.push_str("| policy | gold reward | KL (seq) | KL / token | win rate vs ref | Pearson(r, r*) | ε̂ | ε̂ / Var(r*) | slope of r on r* | length |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let g = |p: &PointSummary, k: &str| p.stats.get(k).map_or("—".to_string(), |e| e.to_string());
    let row = |name: &str, p: &PointSummary| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g(p, "gold"),
            g(p, "kl"),
            g(p, "kl_per_token"),
            g(p, "win_rate"),
            g(p, "pearson"),
            g(p, "eps_hat"),
            g(p, "eps_hat_norm"),
            g(p, "slope"),
            if p.stats["length"].mean.is_finite() { format!("{:.1}", p.stats["length"].mean) } else { "—".into() }
        )
    };
    s.push_str(&row("reference", &r.reference));
    for (name, pts) in &r.methods {
        s.push_str(&row(name, pts.last().expect("at least one point")));
    }
    if r.reference.stats.contains_key("fit_eps_hat") {
        s.push_str(&format!(
            "\n## The fit on {} training prompts (end of training)\n\nThe same slope-1 metrics on answers the policy \
             was trained on: how close training came to the preference model's optimum (ε̂ / Var(r*) → 0, slope → 1), \
             apart from how it generalises to new prompts.\n\n\
             | policy | Pearson(r, r*) | ε̂ | ε̂ / Var(r*) | slope of r on r* |\n|---|---|---|---|---|\n",
            c.eval.fit_prompts
        ));
        let fit = |name: &str, p: &PointSummary| {
            format!(
                "| {name} | {} | {} | {} | {} |\n",
                g(p, "fit_pearson"),
                g(p, "fit_eps_hat"),
                g(p, "fit_eps_hat_norm"),
                g(p, "fit_slope")
            )
        };
        s.push_str(&fit("reference", &r.reference));
        for (name, pts) in &r.methods {
            s.push_str(&fit(name, pts.last().expect("at least one point")));
        }
    }
    s.push_str(
        "\n## Along training (the frontier)\n\n| policy | step | gold reward | KL (seq) | ε̂ |\n|---|---|---|---|---|\n",
    );
    for (name, pts) in &r.methods {
        for p in pts {
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                p.step, p.stats["gold"], p.stats["kl"], p.stats["eps_hat"]
            ));
        }
    }
    s.push_str("\n## Comparisons (method − baseline; paired bootstrap)\n\n| method | gold at matched KL | at KL | ε̂ (end) | Pearson (end) | win rate (end) | KL (end) |\n|---|---|---|---|---|---|---|\n");
    for k in &r.comparisons {
        s.push_str(&format!(
            "| {} − {} | {} | {:.2} | {} | {} | {} | {} |\n",
            k.method, k.baseline, k.gold_at_matched_kl, k.matched_kl, k.eps_hat, k.pearson, k.win_rate, k.kl
        ));
    }
    if let Some(p) = &r.power {
        s.push_str(&format!(
            "\n## Power\n\nPlanned from {}: detecting a gold-reward difference of {} at matched KL with probability {} \
             (two-sided, 5 %) needs {:.0} held-out prompt × seed units; this run has {} (expected standard error {:.3}, \
             minimum detectable effect {:.3}). Reached (standard error = 95 % interval width / 3.92):\n\n\
             | comparison | standard error | minimum detectable effect |\n|---|---|---|\n",
            p.pilot, p.effect, p.power, p.units_needed, p.units, p.expected_se, p.expected_mde
        ));
        for (m, se, mde) in &p.reached {
            s.push_str(&format!("| {m} | {se:.3} | {mde:.3} |\n"));
        }
    }
    s.push_str("\n![gold reward vs KL](frontier.png)\n\n![training curves](curves.png)\n\n![learned reward vs true reward](slope1.png)\n\n## Samples (first seed, end of training)\n\n");
    let mut ex = vec![("reference".to_string(), &reference.examples)];
    ex.extend(runs.iter().map(|rs| (rs[0].method.clone(), &rs[0].points.last().expect("a point").examples)));
    for (name, e) in ex {
        for (p, a) in e.iter() {
            s.push_str(&format!("- **{name}** — {p} → {a}\n"));
        }
    }
    s.push_str(&format!(
        "\n## How to read this\n\n- Gold reward R = w_s·VADER compound − w_r·(1 − topic relevance) (w_s = {}, w_r = {}); see `src/gold/reward.rs`.\n\
         - KL is estimated on each policy's own samples (top-p sampling, so an estimate); win rate compares sample j with the reference's sample j (ties ½).\n\
         - Slope-1 metrics use the held-out prompts' scored answers: r = β·(log π_θ − log π_ref) against r* = R/τ; ε̂ = mean over prompts of Var_k(r − r*). The reference has r = 0, so its ε̂ is the spread of r* itself, and ε̂ / Var(r*) (the method's ε̂ over the reference's) is the fraction of the true reward's within-prompt variance the learned reward misses. The slope is the least-squares slope of r on r* after centring both within each prompt (1 on the slope-1 line; `slope1.png` shows the points).\n\
         - Training seconds per run: {}.\n\
         - Compute per run (sampled + trained tokens): {}.\n",
        c.gold.sentiment_weight,
        c.gold.relevance_weight,
        r.train_seconds.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", "),
        r.compute_tokens.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", ")
    ));
    s
}

/// `frontier.png` (gold reward vs KL, one line per method through its evaluation points, 95% CI bars)
/// and `curves.png` (training loss and reward accuracy per step, mean over seeds).
pub fn plots(dir: &Path, r: &Results, runs: &[Vec<RunEval>]) -> Result<()> {
    use crate::lab::plots::{bounds, err, font, legend};
    use plotters::prelude::*;
    font();
    let colors = [BLUE, RED, RGBColor(0, 150, 0), MAGENTA, CYAN, BLACK];
    let frontier_png = dir.join("frontier.png");
    let root = BitMapBackend::new(&frontier_png, (820, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ref_gold = r.reference.stats["gold"];
    let pts = |p: &PointSummary| (p.stats["kl"].mean, p.stats["gold"]);
    let all: Vec<(f64, Estimate)> = r.methods.values().flatten().map(pts).chain([(0.0, ref_gold)]).collect();
    let (x0, x1) = bounds(all.iter().map(|p| p.0).chain([0.0]));
    let (y0, y1) = bounds(all.iter().flat_map(|p| [p.1.lo, p.1.hi, p.1.mean]).filter(|v| v.is_finite()));
    let mut chart = ChartBuilder::on(&root)
        .caption("gold reward vs KL(π_θ ‖ π_ref) on held-out prompts", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("KL estimate (nats per answer)")
        .y_desc("mean gold reward (95% CI)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for ((name, ps), color) in r.methods.iter().zip(colors.iter().cycle()) {
        let color = *color;
        let line: Vec<(f64, Estimate)> = std::iter::once((0.0, ref_gold)).chain(ps.iter().map(pts)).collect();
        chart
            .draw_series(LineSeries::new(line.iter().map(|p| (p.0, p.1.mean)), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|p| Circle::new((p.0, p.1.mean), 4, color.filled()))).map_err(err)?;
        chart
            .draw_series(
                line.iter()
                    .filter(|p| p.1.lo.is_finite())
                    .map(|p| PathElement::new([(p.0, p.1.lo), (p.0, p.1.hi)], color)),
            )
            .map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)?;

    let curves_png = dir.join("curves.png");
    let root = BitMapBackend::new(&curves_png, (1100, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    type Pick = fn(&(usize, f64, f64)) -> f64;
    let picks: [(&str, Pick); 2] = [("training loss", |c| c.1), ("reward accuracy (strong negatives)", |c| c.2)];
    for ((panel, (title, pick)), corner) in
        panels.iter().zip(picks).zip([SeriesLabelPosition::UpperRight, SeriesLabelPosition::LowerRight])
    {
        let curves: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|rs| {
                let n = rs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
                (0..n)
                    .map(|i| {
                        (rs[0].curve[i].0 as f64, rs.iter().map(|r| pick(&r.curve[i])).sum::<f64>() / rs.len() as f64)
                    })
                    .collect()
            })
            .collect();
        let (x0, x1) = bounds(curves.iter().flatten().map(|p| p.0));
        let (y0, y1) = bounds(curves.iter().flatten().map(|p| p.1).filter(|v| v.is_finite()));
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart.configure_mesh().x_desc("optimiser step").label_style(("sans-serif", 13)).draw().map_err(err)?;
        for ((rs, curve), color) in runs.iter().zip(&curves).zip(colors.iter().cycle()) {
            let color = *color;
            chart
                .draw_series(LineSeries::new(curve.iter().copied(), color.stroke_width(2)))
                .map_err(err)?
                .label(rs[0].method.as_str())
                .legend(move |(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], color.stroke_width(2)));
        }
        legend(&mut chart, corner)?;
    }
    root.present().map_err(err)
}

/// Centred (r*, r) points of every seed's last evaluation: both minus their prompt's mean.
fn centred_points(rewards: &[&Vec<Vec<f64>>], truth: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for r in rewards {
        for (r, t) in r.iter().zip(truth) {
            if r.len() != t.len() || r.is_empty() {
                continue;
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (mr, mt) = (mean(r), mean(t));
            out.extend(r.iter().zip(t).map(|(a, b)| (b - mt, a - mr)).filter(|p| p.0.is_finite() && p.1.is_finite()));
        }
    }
    out
}

/// `slope1.png`: the learned reward r against the true reward r* at the end of training, both
/// centred within each prompt, one panel per method (every seed; held-out answers in blue, the fit
/// prompts' in red), with the slope-1 line — the paper's Figure 1 on a real LM.
pub fn scatter(path: &Path, r: &Results, runs: &[Vec<RunEval>], truth: (&[Vec<f64>], &[Vec<f64>])) -> Result<()> {
    use crate::lab::plots::{bounds, err, font};
    use plotters::prelude::*;
    font();
    type Panel = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);
    let sets: Vec<Panel> = runs
        .iter()
        .map(|rs| {
            let last: Vec<&PointEval> = rs.iter().filter_map(|r| r.points.last()).collect();
            let held: Vec<&Vec<Vec<f64>>> = last.iter().map(|p| &p.rewards).collect();
            let fit: Vec<&Vec<Vec<f64>>> = last.iter().map(|p| &p.fit_rewards).collect();
            (rs[0].method.clone(), centred_points(&held, truth.0), centred_points(&fit, truth.1))
        })
        .collect();
    let cols = sets.len().clamp(1, 4);
    let rows = sets.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (300 * cols as u32 + 20, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "learned reward r vs true reward r*, centred per prompt (blue: held-out, red: training prompts; line: slope 1)",
            ("sans-serif", 18),
        )
        .map_err(err)?;
    let all = || sets.iter().flat_map(|s| s.1.iter().chain(&s.2)).flat_map(|p| [p.0, p.1]);
    let (lo, hi) = bounds(all().chain([-1.0, 1.0]));
    let slope = |name: &str, key: &str| {
        r.methods.get(name).and_then(|p| p.last()).and_then(|p| p.stats.get(key)).map_or(f64::NAN, |e| e.mean)
    };
    for (panel, (name, held, fit)) in root.split_evenly((rows, cols)).iter().zip(&sets) {
        let f = |x: f64| if x.is_finite() { format!("{x:.2}") } else { "—".into() };
        let caption = if fit.is_empty() {
            format!("{name}: slope {}", f(slope(name, "slope")))
        } else {
            format!("{name}: slope {} (training {})", f(slope(name, "slope")), f(slope(name, "fit_slope")))
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(err)?;
        chart.configure_mesh().x_desc("r*").y_desc("r").label_style(("sans-serif", 11)).draw().map_err(err)?;
        let blue = BLUE.mix(0.35);
        let red = RED.mix(0.35);
        chart.draw_series(held.iter().map(|&p| Circle::new(p, 2, blue.filled()))).map_err(err)?;
        chart.draw_series(fit.iter().map(|&p| Circle::new(p, 2, red.filled()))).map_err(err)?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.stroke_width(1))).map_err(err)?;
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_centred_slope_is_one_on_the_slope1_line_and_ignores_per_prompt_shifts() {
        let t = vec![vec![0.0, 1.0, 3.0], vec![2.0, -1.0, 0.5]];
        // r = r* + c(x): slope 1 whatever c(x); r = 2·r* + c(x): slope 2; r = 0: slope 0.
        let shifted: Vec<Vec<f64>> =
            t.iter().zip([5.0, -7.0]).map(|(v, c)| v.iter().map(|x| x + c).collect()).collect();
        let doubled: Vec<Vec<f64>> = t.iter().map(|v| v.iter().map(|x| 2.0 * x + 1.0).collect()).collect();
        let zero: Vec<Vec<f64>> = t.iter().map(|v| vec![0.0; v.len()]).collect();
        let d = Draw::identity(1, 2);
        assert!((centred_slope(&d, &[&shifted], &t) - 1.0).abs() < 1e-12);
        assert!((centred_slope(&d, &[&doubled], &t) - 2.0).abs() < 1e-12);
        assert_eq!(centred_slope(&d, &[&zero], &t), 0.0);
        // Two seeds pool their points; a missing prompt (an old cache without rewards) gives NaN.
        assert!((centred_slope(&Draw::identity(2, 2), &[&shifted, &doubled], &t) - 1.5).abs() < 1e-12);
        assert!(centred_slope(&d, &[&vec![]], &t).is_nan());
    }

    #[test]
    fn the_power_plan_reproduces_the_study_sizing() {
        let p = DemoConfig::preset(super::super::Preset::Study).power.unwrap();
        // 2.80 standard errors; 96 × (0.124 / (0.2 / 2.80))² ≈ 290 units; 67 × 5 units → SE 0.066.
        assert!((p.z_sum() - 2.8016).abs() < 1e-3, "{}", p.z_sum());
        assert!((p.units_needed() - 289.4).abs() < 1.0, "{}", p.units_needed());
        let se = p.expected_se(67, 5);
        assert!((se - 0.0664).abs() < 1e-3 && (p.mde(se) - 0.186).abs() < 2e-3, "{se}");
    }

    #[test]
    fn a_method_is_compared_with_the_dpo_of_its_own_beta() {
        let c = DemoConfig::preset(super::super::Preset::Study);
        let names = |m: usize| baseline_of(&c.methods, &c, m).map(|b| c.methods[b].name.clone());
        assert_eq!(names(0), None);
        assert_eq!(names(3).as_deref(), Some("dpo-b0.25"));
        assert_eq!(names(4), None);
        assert_eq!(names(7).as_deref(), Some("dpo-b1"));
        assert_eq!(c.methods[7].name, "epa-weak-b1");
    }

    #[test]
    fn gold_at_interpolates_and_clamps() {
        let pts = [(0.0, 1.0), (2.0, 3.0), (1.0, 1.5)];
        assert_eq!(gold_at(&pts, 0.5), 1.25);
        assert_eq!(gold_at(&pts, 1.5), 2.25);
        assert_eq!(gold_at(&pts, 5.0), 3.0);
        assert_eq!(gold_at(&pts, -1.0), 1.0);
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_of_a_known_sample() {
        let v = [(0..200).map(|i| (i % 10) as f64).collect::<Vec<f64>>()];
        let refs: Vec<&Vec<f64>> = v.iter().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let reps: Vec<f64> = (0..2000).map(|_| Draw::random(1, 200, &mut rng).mean(&refs)).collect();
        let s = interval(Draw::identity(1, 200).mean(&refs), reps);
        assert_eq!(s.mean, 4.5);
        // sd of the mean = 2.87/√200 ≈ 0.203, so the interval is ≈ ±0.40.
        assert!((s.hi - s.lo - 0.80).abs() < 0.1 && s.lo < 4.5 && s.hi > 4.5, "{s}");
    }
}
