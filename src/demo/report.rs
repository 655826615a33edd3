//! From per-prompt evaluations to the verdict: means with bootstrap 95% intervals (resampling
//! seeds, then prompts, the same draws for every method so differences are paired), gold reward at
//! matched KL, `results.json`, `report.md` and the plots.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use super::config::DemoConfig;
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

/// Every metric at one evaluation point, averaged over seeds and prompts, with its interval.
#[derive(Debug, Serialize)]
pub struct PointSummary {
    /// Training step of the point (0 for the reference).
    pub step: usize,
    /// Each metric's estimate, by name: `gold`, `kl`, `kl_per_token`, `win_rate`, `pearson`,
    /// `eps_hat`, `length`.
    pub stats: BTreeMap<String, Estimate>,
}

/// A method against the DPO baseline: paired differences (method − baseline) with bootstrap
/// intervals.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The method compared.
    pub method: String,
    /// The baseline: the first method whose loss is `dpo`.
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
    /// The verdict, one sentence per comparison and criterion (gold reward at matched KL, ε̂).
    pub verdict: Vec<String>,
}

/// Summaries with intervals. `runs[m][s]` is method `m`'s run with seed `s` (every run has the same
/// evaluation steps); `reference` is the reference model's own point.
pub fn summarise(
    cfg: &DemoConfig,
    command: &str,
    data: BTreeMap<String, f64>,
    reference: &PointEval,
    runs: &[Vec<RunEval>],
) -> Results {
    let n_seeds = cfg.seeds.len();
    let n_prompts = reference.gold.len();
    let mut rng = ChaCha8Rng::seed_from_u64(20_250_713);
    let mut draws = vec![Draw::identity(n_seeds, n_prompts)];
    draws.extend((0..cfg.eval.bootstrap).map(|_| Draw::random(n_seeds, n_prompts, &mut rng)));
    // stat(d, m, i, metric): the mean of a metric at point i of method m under draw d (m = None: reference).
    let value = |d: &Draw, m: Option<usize>, i: usize, f: Metric| -> f64 {
        match m {
            None => d.mean(&vec![f(reference); n_seeds]),
            Some(m) => d.mean(&runs[m].iter().map(|r| f(&r.points[i])).collect::<Vec<_>>()),
        }
    };
    let summary = |m: Option<usize>, i: usize| -> PointSummary {
        let stats = METRICS
            .iter()
            .map(|&(name, f)| {
                let reps = draws[1..].iter().map(|d| value(d, m, i, f)).collect();
                (name.to_string(), interval(value(&draws[0], m, i, f), reps))
            })
            .collect();
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
    if let Some(base) = cfg.methods.iter().position(|m| m.loss == "dpo") {
        for (m, meth) in cfg.methods.iter().enumerate().filter(|&(m, _)| m != base) {
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
    let train_seconds = cfg
        .methods
        .iter()
        .enumerate()
        .map(|(m, meth)| (meth.name.clone(), runs[m].iter().map(|r| r.train_seconds).sum::<f64>() / n_seeds as f64))
        .collect();
    Results {
        command: command.to_string(),
        config: cfg.clone(),
        data,
        reference: summary(None, 0),
        methods,
        comparisons,
        train_seconds,
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
         on R/τ with τ = {} (r* = R/τ); {} steps × {} prompts, lr {}, β = {}, {}; seeds {:?}; {} bootstrap resamples \
         (seeds, then prompts). Full configuration: `config.toml`.\n\n",
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
    s.push_str("## Verdict\n\n");
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
    s.push_str("| policy | gold reward | KL (seq) | KL / token | win rate vs ref | Pearson(r, r*) | ε̂ | length |\n|---|---|---|---|---|---|---|---|\n");
    let row = |name: &str, p: &PointSummary| {
        let g = |k: &str| p.stats[k].to_string();
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            g("gold"),
            g("kl"),
            g("kl_per_token"),
            g("win_rate"),
            g("pearson"),
            g("eps_hat"),
            if p.stats["length"].mean.is_finite() { format!("{:.1}", p.stats["length"].mean) } else { "—".into() }
        )
    };
    s.push_str(&row("reference", &r.reference));
    for (name, pts) in &r.methods {
        s.push_str(&row(name, pts.last().expect("at least one point")));
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
    s.push_str("\n## Comparisons with DPO (differences; paired bootstrap)\n\n| method | gold at matched KL | at KL | ε̂ (end) | Pearson (end) | win rate (end) | KL (end) |\n|---|---|---|---|---|---|---|\n");
    for k in &r.comparisons {
        s.push_str(&format!(
            "| {} − {} | {} | {:.2} | {} | {} | {} | {} |\n",
            k.method, k.baseline, k.gold_at_matched_kl, k.matched_kl, k.eps_hat, k.pearson, k.win_rate, k.kl
        ));
    }
    s.push_str("\n![gold reward vs KL](frontier.png)\n\n![training curves](curves.png)\n\n## Samples (first seed, end of training)\n\n");
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
         - Slope-1 metrics use the held-out prompts' scored answers: r = β·(log π_θ − log π_ref) against r* = R/τ; ε̂ = mean over prompts of Var_k(r − r*). The reference has r = 0, so its ε̂ is the spread of r* itself.\n\
         - Training seconds per run: {}.\n",
        c.gold.sentiment_weight,
        c.gold.relevance_weight,
        r.train_seconds.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

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
