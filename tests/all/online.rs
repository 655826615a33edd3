//! `epa iterate` (online EPA) on the tiny fixture policy, judged by the tiny reward model: rounds are
//! deterministic, a run continues from its finished rounds, and bad settings name their key.

use std::path::Path;

use epa::online::{IterateConfig, run};

use crate::common::{fixture, spec};

fn config(dir: &Path, rounds: usize, extra: &[&str]) -> IterateConfig {
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            "{\"prompt\": \"Write one sentence about the sea.\"}\n",
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"Say something kind.\"}]}\n",
            "{\"prompt\": \"Name a colour.\"}\n",
        ),
    )
    .unwrap();
    let mut sets: Vec<String> = vec![
        format!("online.prompts={:?}", prompts.display().to_string()),
        format!("online.judge={:?}", format!("rm:{}", fixture("tiny-rm-llama").display())),
        format!("online.rounds={rounds}"),
        "online.samples_per_prompt=3".into(),
        "online.steps_per_round=2".into(),
        "online.max_new_tokens=6".into(),
        format!("online.out={:?}", dir.join("out").display().to_string()),
        format!("train.model.path={:?}", fixture("tiny-llama").display().to_string()),
        format!("train.model.device={:?}", spec().to_string()),
        "train.data.batch.prompts_per_batch=2".into(),
        "train.data.weak.k=1".into(),
        "train.optim.lr=1e-3".into(),
        "train.output.progress=false".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    IterateConfig::load(None, &sets).unwrap()
}

fn weights(report: &epa::online::IterateReport) -> Vec<u8> {
    std::fs::read(report.final_policy.join("model.safetensors")).unwrap()
}

#[test]
fn rounds_are_deterministic_and_a_run_continues_from_its_finished_rounds() {
    let a = tempfile::tempdir().unwrap();
    let straight = run(&config(a.path(), 2, &[])).unwrap();
    assert_eq!(straight.rounds.len(), 2);
    for (r, s) in straight.rounds.iter().enumerate() {
        assert_eq!(s.round, r);
        assert!(s.groups > 0 && s.groups <= 3, "{s:?}");
        assert!(s.sampled_tokens > 0 && s.trained_tokens > 0, "{s:?}");
        assert!(s.first["loss"].is_finite() && s.last["loss"].is_finite(), "{s:?}");
        // The strong negatives are the other sampled answers, plus a weak one from another prompt of
        // the batch (3 prompts in batches of 2: one of the two steps has a batch of two).
        assert!(s.first.contains_key("logps/weak") || s.last.contains_key("logps/weak"), "{s:?}");
    }
    // Round 1 trains the policy round 0 exported.
    assert!(straight.rounds[1].policy.ends_with("round-000/final"), "{}", straight.rounds[1].policy);
    assert!(straight.final_reward.is_finite());
    assert_eq!(
        straight.compute_tokens,
        straight.rounds.iter().map(|s| s.sampled_tokens + s.trained_tokens).sum::<usize>()
    );
    let samples = std::fs::read_to_string(a.path().join("out/round-001/samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 3);

    // One round, then two: the first round is reused, not redone, and the result is the same.
    let b = tempfile::tempdir().unwrap();
    let first = run(&config(b.path(), 1, &[])).unwrap();
    let done = b.path().join("out/round-000/round.json");
    let stamp = std::fs::metadata(&done).unwrap().modified().unwrap();
    let resumed = run(&config(b.path(), 2, &[])).unwrap();
    assert_eq!(std::fs::metadata(&done).unwrap().modified().unwrap(), stamp, "round 0 was redone");
    assert_eq!(resumed.rounds[0], first.rounds[0]);
    // Every number matches the straight run but the timings (and the folders).
    let untimed = |r: &epa::online::IterateReport| {
        let mut rounds = r.rounds.clone();
        for s in &mut rounds {
            s.seconds = 0.0;
            s.policy = s.policy.rsplit(['/', '\\']).take(2).collect::<Vec<_>>().join("/");
            s.key.clear(); // hashes the settings, paths included
            s.first.remove("tokens_per_s");
            s.last.remove("tokens_per_s");
        }
        rounds
    };
    assert_eq!(untimed(&resumed), untimed(&straight));
    assert_eq!(resumed.final_reward, straight.final_reward);
    assert_eq!(weights(&resumed), weights(&straight), "final weights differ");

    // Other settings: the finished rounds are not silently reused.
    let e = run(&config(b.path(), 2, &["train.optim.lr=2e-3"])).unwrap_err();
    assert!(format!("{e:#}").contains("other settings"), "{e:#}");
}

#[test]
fn online_dpo_pairs_best_with_worst_and_bad_settings_name_their_key() {
    let d = tempfile::tempdir().unwrap();
    let r = run(&config(d.path(), 1, &["online.pairing=\"best_vs_worst\"", "train.data.weak.k=0"])).unwrap();
    let s = &r.rounds[0];
    // One strong negative per group, no weak ones: the DPO-shaped batch.
    assert!(!s.first.contains_key("logps/weak") && !s.last.contains_key("logps/weak"), "{s:?}");
    // ln 2 at the first step: one negative per prompt, rewards 0.
    assert!((s.first["loss"] - std::f64::consts::LN_2).abs() < 1e-6, "{s:?}");

    let prompts = d.path().join("prompts.jsonl");
    let e = IterateConfig::load(
        None,
        &[format!("online.prompts={:?}", prompts.display().to_string()), "online.samples_per_prompt=1".into()],
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("online.samples_per_prompt"), "{e:#}");
    let e = IterateConfig::load(
        None,
        &[format!("online.prompts={:?}", prompts.display().to_string()), "online.judge=\"vibes\"".into()],
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("online.judge"), "{e:#}");
}
