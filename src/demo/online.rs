//! Online methods of the experiment: rounds of sample → label → train, at the offline methods'
//! compute.
//!
//! An online method splits `train.steps` into `rounds` equal rounds. Round r takes the r-th of
//! `rounds` equal slices of the training prompts, samples K answers per prompt from the policy the
//! round starts from (the reference in round 0), scores them with the gold reward and labels them
//! exactly as the data stage labels the reference's answers (a Plackett-Luce draw on R/τ: the
//! first-ranked answer is the positive), then trains its share of the steps from that policy against
//! the initial reference — every other answer as a strong negative (`best_vs_rest`: online EPA) or
//! the last-ranked one (`best_vs_worst`: online DPO). Over the run it samples as many answers as the
//! offline data holds for the training prompts and trains as many steps, so its compute (sampled +
//! trained tokens) matches the offline methods'. Each round is an `epa train` run with its own
//! optimiser state and learning-rate schedule (as in `epa iterate`); its exported policy starts the
//! next round. The policy is evaluated at the same global steps as an offline run's.

use anyhow::{Context, Result};

use super::config::{DemoConfig, Method, OnlineMethod};
use super::datagen::{self, Rejected, Row};
use crate::device::DeviceOptions;
use crate::gold::GoldReward;
use crate::model::load::load_model;
use crate::online::Pairing;
use crate::train::{RunOptions, StepHook, TrainConfig, train_with};

/// The sampling seed of round `r` of the run with training seed `seed`: every (seed, round) its own
/// stream, none equal to the data's (`data.seed`, `data.seed + 1`) or the evaluation's.
fn round_seed(cfg: &DemoConfig, seed: u64, r: usize) -> u64 {
    cfg.data.seed.wrapping_add(1_000_003u64.wrapping_mul(seed + 1)).wrapping_add(10_007 * (r as u64 + 1))
}

/// Runs the rounds of online method `m`. `tc` is the run's `epa train` configuration as an offline
/// run would have it (its data paths, steps and output are replaced per round); `topics` are the
/// training prompts' topics in data order; `hook` is called at every evaluation with the global
/// step. Returns the run's compute: sampled + trained tokens.
#[allow(clippy::too_many_arguments)] // the run's inputs, each used once
pub fn train_online(
    cfg: &DemoConfig,
    m: &Method,
    online: &OnlineMethod,
    seed: u64,
    tc: &TrainConfig,
    topics: &[String],
    gold: &GoldReward,
    dev: DeviceOptions,
    hook: &mut StepHook,
) -> Result<usize> {
    let run_dir = tc.output.dir.clone();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let steps = cfg.train.steps / online.rounds;
    let mut policy = cfg.model.clone();
    let mut compute = 0;
    for r in 0..online.rounds {
        let share = &topics[r * topics.len() / online.rounds..(r + 1) * topics.len() / online.rounds];
        let mut lm = load_model(&policy, &dev.device()?).with_context(|| format!("{} round {r}: {policy}", m.name))?;
        lm.model.precision = dev.dtype;
        let mut rows = datagen::make_rows_ordered(
            &lm,
            gold,
            share,
            &cfg.data,
            round_seed(cfg, seed, r),
            Rejected::Ranked,
            |_| {},
        )?;
        compute += datagen::sampled_tokens(&lm, &rows)?;
        drop(lm);
        if online.pairing == Pairing::BestVsWorst {
            rows.iter_mut().for_each(keep_worst);
        }
        let data = run_dir.join(format!("round-{r}.jsonl"));
        datagen::write_rows(&data, &rows)?;
        let mut rc = tc.clone();
        rc.model.path = policy.clone();
        rc.reference.path = Some(cfg.model.clone());
        rc.data.paths = vec![data];
        rc.data.seed = tc.data.seed.wrapping_add(r as u64);
        rc.optim.seed = tc.optim.seed.wrapping_add(r as u64);
        rc.optim.max_steps = steps;
        rc.output.dir = run_dir.join(format!("round-{r}"));
        rc.output.overwrite = true;
        rc.output.export = r + 1 < online.rounds;
        let offset = r * steps;
        let mut at = |step: usize, p: &crate::model::CausalLm| hook(offset + step, p);
        let summary = train_with(&rc, &RunOptions::default(), Some(&mut at))?;
        compute += summary.tokens;
        eprintln!("  {} round {r}: {} prompts sampled and trained {steps} steps from {policy}", m.name, share.len());
        if r + 1 < online.rounds {
            policy = rc.output.dir.join("final").display().to_string();
        }
    }
    Ok(compute)
}

/// Keeps only the last-ranked rejected answer (rows made with [`Rejected::Ranked`]).
fn keep_worst(row: &mut Row) {
    if let (Some(a), Some(s)) = (row.rejected.pop(), row.score_rejected.pop()) {
        row.rejected = vec![a];
        row.score_rejected = vec![s];
    }
}

/// The topics of the training rows, in data order.
pub fn topics(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.topic.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_rounds_sample_their_own_streams_and_online_dpo_keeps_the_worst() {
        let cfg = DemoConfig::preset(super::super::Preset::Study);
        let seeds: std::collections::BTreeSet<u64> =
            (1..=5).flat_map(|s| (0..3).map(move |r| (s, r))).map(|(s, r)| round_seed(&cfg, s, r)).collect();
        assert_eq!(seeds.len(), 15);
        for d in [cfg.data.seed, cfg.data.seed + 1, cfg.data.seed + 7_777] {
            assert!(!seeds.contains(&d));
        }
        let mut row = Row {
            prompt: "p".into(),
            topic: "t".into(),
            chosen: "a".into(),
            rejected: vec!["b".into(), "c".into(), "d".into()],
            score_chosen: 1.0,
            score_rejected: vec![0.5, 0.2, -1.0],
            samples: vec![],
            gold: vec![],
        };
        keep_worst(&mut row);
        assert_eq!((row.rejected, row.score_rejected), (vec!["d".to_string()], vec![-1.0]));
    }
}
