//! From per-prompt results to the report: every number with its bootstrap 95% interval (the same
//! prompt resamples for every number, so they are paired), `eval.json`, `eval.md` and `rewards.png`
//! (histograms of the judge's rewards, policy over reference), each written atomically.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use super::stats::{Interval, LC_RIDGE, bootstrap, lc_win_rate, mean, mean_at, win};
use crate::model::save::write_atomic;

/// One model's answers to one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// The sampled answers as text, in sample order.
    pub answers: Vec<String>,
    /// The judge's reward of each answer.
    pub rewards: Vec<f64>,
    /// Generated tokens per answer (stop token included).
    pub lengths: Vec<f64>,
}

/// Everything measured on one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct PromptResult {
    /// The prompt as JSON: a string or its message list.
    pub prompt: Value,
    /// The prompt's topic, when it has one (left out of the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The policy's answers.
    pub policy: Side,
    /// The reference's answers, sampled with the same seed and settings.
    pub reference: Side,
    /// log π_θ(y|x) and log π_ref(y|x) of the policy's answers.
    pub policy_logp: Vec<f64>,
    /// log π_ref(y|x) of the same (policy's) answers, summed over their tokens.
    pub reference_logp: Vec<f64>,
    /// Mean over j of win(policy answer j, reference answer j).
    pub win_rate: f64,
    /// KL(π_θ ‖ π_ref) estimated on this prompt: mean of log π_θ − log π_ref over the policy's
    /// answers, in nats per answer.
    pub kl: f64,
    /// The same log-ratios summed over the answers, divided by their generated tokens: nats per
    /// token.
    pub kl_per_token: f64,
}

/// The report: settings, the summary numbers, the per-prompt values.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The run's settings by name (models, prompts, judge, sampling, seed, bootstrap resamples,
    /// device, …).
    pub settings: BTreeMap<String, Value>,
    /// `policy` / `reference`: reward, length (and the policy's kl, kl_per_token);
    /// `policy_vs_reference`: win_rate, length_controlled_win_rate, reward_difference.
    pub metrics: BTreeMap<String, BTreeMap<String, Interval>>,
    /// One result per prompt, in prompt order.
    pub per_prompt: Vec<PromptResult>,
}

/// The pairs (win, length difference) of the prompts `idx`.
fn pairs(per_prompt: &[PromptResult], idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut w = Vec::new();
    let mut d = Vec::new();
    for &i in idx {
        let p = &per_prompt[i];
        for j in 0..p.policy.rewards.len().min(p.reference.rewards.len()) {
            w.push(win(p.policy.rewards[j], p.reference.rewards[j]));
            d.push(p.policy.lengths[j] - p.reference.lengths[j]);
        }
    }
    (w, d)
}

/// The summary numbers with intervals over `reps` prompt resamples (seeded).
pub fn summarise(per_prompt: &[PromptResult], reps: usize, seed: u64) -> BTreeMap<String, BTreeMap<String, Interval>> {
    let n = per_prompt.len();
    let col = |f: &dyn Fn(&PromptResult) -> f64| per_prompt.iter().map(f).collect::<Vec<f64>>();
    let ci = |values: Vec<f64>| bootstrap(n, reps, seed, |idx| mean_at(&values, idx));
    let policy = BTreeMap::from([
        ("reward".to_string(), ci(col(&|p| mean(&p.policy.rewards)))),
        ("length".to_string(), ci(col(&|p| mean(&p.policy.lengths)))),
        ("kl".to_string(), ci(col(&|p| p.kl))),
        ("kl_per_token".to_string(), ci(col(&|p| p.kl_per_token))),
    ]);
    let reference = BTreeMap::from([
        ("reward".to_string(), ci(col(&|p| mean(&p.reference.rewards)))),
        ("length".to_string(), ci(col(&|p| mean(&p.reference.lengths)))),
    ]);
    let lc = bootstrap(n, reps, seed, |idx| {
        let (w, d) = pairs(per_prompt, idx);
        lc_win_rate(&w, &d, LC_RIDGE)
    });
    let versus = BTreeMap::from([
        ("win_rate".to_string(), ci(col(&|p| p.win_rate))),
        ("length_controlled_win_rate".to_string(), lc),
        ("reward_difference".to_string(), ci(col(&|p| mean(&p.policy.rewards) - mean(&p.reference.rewards)))),
    ]);
    BTreeMap::from([
        ("policy".to_string(), policy),
        ("reference".to_string(), reference),
        ("policy_vs_reference".to_string(), versus),
    ])
}

fn fmt(i: &Interval) -> String {
    if !i.estimate.is_finite() {
        return "—".into();
    }
    if !i.lo.is_finite() {
        return format!("{:.3}", i.estimate);
    }
    format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi)
}

/// `eval.md`: the settings and one table.
pub fn markdown(r: &EvalReport) -> String {
    let s = |k: &str| {
        r.settings.get(k).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).unwrap_or_default()
    };
    let m = |side: &str, k: &str| r.metrics.get(side).and_then(|x| x.get(k)).map(fmt).unwrap_or_else(|| "—".into());
    let mut out = String::new();
    out.push_str("# epa eval\n\n");
    out.push_str(&format!(
        "Policy `{}` against reference `{}`, judged by `{}`, on {} prompts of `{}` × {} samples each \
         (temperature {}, top-p {}, at most {} new tokens, seed {}). 95% intervals: percentile bootstrap over prompts ({} resamples).\n\n",
        s("policy"), s("reference"), s("judge"), r.per_prompt.len(), s("prompts"), s("samples"),
        s("temperature"), s("top_p"), s("max_new_tokens"), s("seed"), s("bootstrap")
    ));
    out.push_str("| metric | policy | reference |\n|---|---|---|\n");
    out.push_str(&format!("| mean reward | {} | {} |\n", m("policy", "reward"), m("reference", "reward")));
    out.push_str(&format!(
        "| reward difference (policy − reference) | {} | |\n",
        m("policy_vs_reference", "reward_difference")
    ));
    out.push_str(&format!("| win rate vs reference (ties ½) | {} | 0.500 |\n", m("policy_vs_reference", "win_rate")));
    out.push_str(&format!(
        "| length-controlled win rate | {} | 0.500 |\n",
        m("policy_vs_reference", "length_controlled_win_rate")
    ));
    out.push_str(&format!("| KL(π_θ ‖ π_ref), nats per answer | {} | 0 |\n", m("policy", "kl")));
    out.push_str(&format!("| KL per token | {} | 0 |\n", m("policy", "kl_per_token")));
    out.push_str(&format!(
        "| mean answer length (tokens) | {} | {} |\n",
        m("policy", "length"),
        m("reference", "length")
    ));
    out.push_str(
        "\nWin rate: policy answer j against reference answer j of the same prompt (same seed and settings). \
         Length-controlled: σ(a) of the logistic fit logit P(win) = a + b·tanh(Δlen / sd(Δlen)) (AlpacaEval 2.0 style), \
         the win rate at equal lengths. KL: mean of log π_θ(y|x) − log π_ref(y|x) over the policy's own answers.\n\n\
         ![rewards](rewards.png)\n",
    );
    if let Some(p) = r.per_prompt.first()
        && let Some(a) = p.policy.answers.first()
    {
        out.push_str(&format!("\nExample — prompt {}:\n\n- policy: {:?}\n", p.prompt, a));
        if let Some(b) = p.reference.answers.first() {
            out.push_str(&format!("- reference: {b:?}\n"));
        }
    }
    out
}

/// `rewards.png`: histograms of every answer's reward, policy and reference on one axis.
pub fn plot(path: &Path, r: &EvalReport) -> Result<()> {
    use crate::lab::plots::{bounds, err, font, legend};
    use plotters::prelude::*;
    font();
    let pol: Vec<f64> =
        r.per_prompt.iter().flat_map(|p| p.policy.rewards.iter().copied()).filter(|x| x.is_finite()).collect();
    let refr: Vec<f64> =
        r.per_prompt.iter().flat_map(|p| p.reference.rewards.iter().copied()).filter(|x| x.is_finite()).collect();
    let (x0, x1) = bounds(pol.iter().chain(&refr).copied().chain([0.0]));
    let bins = 20usize;
    let width = (x1 - x0) / bins as f64;
    let hist = |v: &[f64]| {
        let mut h = vec![0usize; bins];
        for x in v {
            h[(((x - x0) / width) as usize).min(bins - 1)] += 1;
        }
        h
    };
    let (hp, hr) = (hist(&pol), hist(&refr));
    let top = hp.iter().chain(&hr).copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    // Drawn to a temporary file beside `path` (the encoder picks the format from the extension), then
    // moved into place, so a reader never sees half a picture.
    let tmp = path.with_file_name(format!(".{}.tmp.png", path.file_name().and_then(|n| n.to_str()).unwrap_or("plot")));
    {
        let root = BitMapBackend::new(&tmp, (820, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("judge reward of sampled answers", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("reward")
            .y_desc("answers")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (h, color, name) in [(&hr, RED, "reference"), (&hp, BLUE, "policy")] {
            chart
                .draw_series(h.iter().enumerate().map(|(k, &c)| {
                    let a = x0 + k as f64 * width;
                    Rectangle::new([(a, 0.0), (a + width, c as f64)], color.mix(0.35).filled())
                }))
                .map_err(err)?
                .label(format!("{name} ({} answers)", h.iter().sum::<usize>()))
                .legend(move |(x, y)| Rectangle::new([(x - 8, y - 5), (x + 8, y + 5)], color.mix(0.35).filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(err)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("moving the plot into place at {}", path.display()))
}

/// Writes `eval.json`, `eval.md` and `rewards.png` into `dir` (created if missing).
pub fn write(dir: &Path, r: &EvalReport) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("eval.json"), serde_json::to_string_pretty(r)?.as_bytes())?;
    write_atomic(&dir.join("eval.md"), markdown(r).as_bytes())?;
    plot(&dir.join("rewards.png"), r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(pol: &[f64], refr: &[f64], lp: &[f64], lr: &[f64]) -> PromptResult {
        let side = |r: &[f64], l: &[f64]| Side {
            answers: vec![String::new(); r.len()],
            rewards: r.to_vec(),
            lengths: l.to_vec(),
        };
        PromptResult {
            prompt: Value::Null,
            topic: None,
            policy: side(pol, lp),
            reference: side(refr, lr),
            policy_logp: vec![],
            reference_logp: vec![],
            win_rate: super::super::stats::win_rate(pol, refr),
            kl: 0.0,
            kl_per_token: 0.0,
        }
    }

    #[test]
    fn summary_numbers_are_means_over_prompts() {
        let pp = vec![
            prompt(&[1.0, 3.0], &[2.0, 3.0], &[4.0, 6.0], &[5.0, 5.0]),
            prompt(&[0.0, 0.0], &[1.0, -1.0], &[2.0, 2.0], &[3.0, 1.0]),
        ];
        let m = summarise(&pp, 200, 0);
        assert_eq!(m["policy"]["reward"].estimate, 1.0); // (2 + 0) / 2
        assert_eq!(m["reference"]["reward"].estimate, 1.25); // (2.5 + 0) / 2
        assert_eq!(m["policy_vs_reference"]["win_rate"].estimate, 0.375); // (¼ + ½) / 2
        assert_eq!(m["policy"]["length"].estimate, 3.5);
        assert_eq!(m["policy_vs_reference"]["reward_difference"].estimate, -0.25);
        for side in m.values() {
            for i in side.values() {
                assert!(i.lo <= i.estimate + 1e-12 && i.estimate <= i.hi + 1e-12, "{i:?}");
            }
        }
    }
}
