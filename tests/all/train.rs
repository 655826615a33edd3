//! `epa train` on the tiny fixture model and a small dataset written here: the loss falls and
//! accuracy rises for DPO and EPA, runs are reproducible, resume is bit-exact, a cached reference
//! equals a frozen one, and bad configs give one clear error each.

use crate::common::fixture;
use epa::train::{TrainConfig, train};
use std::path::{Path, PathBuf};

const TOPICS: [&str; 12] = [
    "the sea",
    "a forest",
    "the moon",
    "a city",
    "winter",
    "a garden",
    "the desert",
    "a river",
    "music",
    "a library",
    "the mountains",
    "a market",
];

pub(crate) fn write_data(dir: &Path) -> PathBuf {
    let path = dir.join("prefs.jsonl");
    let mut s = String::new();
    for t in TOPICS {
        let row = serde_json::json!({
            "prompt": format!("Describe {t} in one sentence."),
            "chosen": format!("{t} is calm, bright and kind."),
            "rejected": format!("I do not know anything about {t}."),
        });
        s.push_str(&row.to_string());
        s.push('\n');
    }
    std::fs::write(&path, s).unwrap();
    path
}

pub(crate) fn config(dir: &Path, loss: &str, steps: usize, extra: &[&str]) -> TrainConfig {
    let data = write_data(dir);
    let mut sets: Vec<String> = vec![
        format!("model.path={:?}", fixture("tiny-llama").display().to_string()),
        format!("data.paths=[{:?}]", data.display().to_string()),
        "data.batch.prompts_per_batch=4".into(),
        "data.weak.k=2".into(),
        format!("loss.terms=[{{name={loss:?}, beta=0.5}}]"),
        "optim.lr=0.003".into(),
        "optim.schedule=\"constant\"".into(),
        format!("optim.max_steps={steps}"),
        format!("output.dir={:?}", dir.join("run").display().to_string()),
        format!("reference.cache_dir={:?}", dir.join("cache").display().to_string()),
        "output.progress=false".into(),
        crate::common::device_set(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(None, &sets).unwrap()
}

fn metric_rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mean(rows: &[serde_json::Value], key: &str) -> f64 {
    rows.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>() / rows.len() as f64
}

#[test]
fn dpo_and_epa_learn_and_are_reproducible() {
    for loss in ["dpo", "epa"] {
        let d = tempfile::tempdir().unwrap();
        let s = train(&config(d.path(), loss, 24, &[]), None).unwrap();
        let rows = metric_rows(d.path());
        assert_eq!(rows.len(), 24);
        // First 3 steps vs last 3 (each step sees 4 of the 12 prompts: an epoch is 3 steps).
        let (early, late) = (&rows[..3], &rows[21..]);
        assert!(
            mean(late, "loss") < mean(early, "loss") - 0.1,
            "{loss}: loss {} → {}",
            mean(early, "loss"),
            mean(late, "loss")
        );
        assert!(mean(late, "rewards/accuracies") > mean(early, "rewards/accuracies"), "{loss}");
        assert!(mean(late, "rewards/accuracies") >= 0.9, "{loss}: {}", mean(late, "rewards/accuracies"));
        assert!(d.path().join("run/final/model.safetensors").exists());
        assert!(d.path().join("run/final/tokenizer.json").exists());
        assert_eq!(s.steps, 24);

        // Same seed, same numbers.
        let d2 = tempfile::tempdir().unwrap();
        train(&config(d2.path(), loss, 24, &[]), None).unwrap();
        let again = metric_rows(d2.path());
        for (a, b) in rows.iter().zip(&again) {
            assert_eq!(a["loss"], b["loss"], "{loss}: runs differ");
            assert_eq!(a["rewards/margins"], b["rewards/margins"]);
        }
    }
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("run/final/model.safetensors")).unwrap()
}

#[test]
fn resume_is_bit_exact() {
    // On a GPU backend a cached reference log-prob depends in its last bits on the batch it was
    // computed in (kernel shapes follow the padded length), and the resumed run computes the pairs
    // of its remaining steps in other batches than the straight run: there the reference is frozen
    // (computed inside each step's own batch) so the test checks what resume itself restores.
    let reference: &[&str] = if crate::common::spec().is_gpu() { &["reference.mode=\"frozen\""] } else { &[] };
    let straight = tempfile::tempdir().unwrap();
    train(&config(straight.path(), "epa", 8, reference), None).unwrap();

    let split = tempfile::tempdir().unwrap();
    train(&config(split.path(), "epa", 4, reference), None).unwrap();
    // The same run, asked for 8 steps, continues from the checkpoint at step 4.
    let cfg = config(split.path(), "epa", 8, reference);
    // max_steps changed: resume says so and needs the permission.
    let opts =
        epa::train::RunOptions { resume: Some(split.path().join("run")), allow_config_change: true, collective: None };
    let s = epa::train::train_with(&cfg, &opts, None).unwrap();
    assert_eq!(s.steps, 8);
    assert_eq!(s.resumed_from, Some(4), "the second call must continue from the step-4 checkpoint");
    // A 4-step run decays nothing (constant schedule), so steps 5..8 see the same learning rates.
    assert_eq!(weights(straight.path()), weights(split.path()), "resumed weights differ");
    let (a, b) = (metric_rows(straight.path()), metric_rows(split.path()));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["loss"], y["loss"]);
        assert_eq!(x["grad_norm"], y["grad_norm"]);
    }
}

#[test]
fn cached_reference_equals_frozen_and_is_reused() {
    let frozen = tempfile::tempdir().unwrap();
    train(&config(frozen.path(), "dpo", 4, &["reference.mode=\"frozen\""]), None).unwrap();
    let cached = tempfile::tempdir().unwrap();
    let s1 = train(&config(cached.path(), "dpo", 4, &["reference.mode=\"cached\""]), None).unwrap();
    assert!(s1.reference_pairs_computed > 0);
    let (a, b) = (metric_rows(frozen.path()), metric_rows(cached.path()));
    for (x, y) in a.iter().zip(&b) {
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((lx - ly).abs() < 1e-5, "frozen {lx} vs cached {ly}");
    }
    // A second run on the same data and weights (another loss) computes nothing.
    let s2 =
        train(&config(cached.path(), "epa", 4, &["reference.mode=\"cached\"", "output.overwrite=true"]), None).unwrap();
    assert_eq!(s2.reference_pairs_computed, 0);
}

#[test]
fn bad_configs_give_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let data = write_data(d.path());
    let base = |extra: &str| -> String {
        let mut sets = vec![format!("data.paths=[{:?}]", data.display().to_string())];
        sets.push(extra.to_string());
        match TrainConfig::load(None, &sets) {
            Ok(_) => panic!("{extra} should be rejected"),
            Err(e) => format!("{e:#}"),
        }
    };
    assert!(base("optim.lrr=0.1").contains("lrr"));
    assert!(base("optim.lr=-1").contains("optim.lr"));
    assert!(base("loss.terms=[{name=\"dpoo\"}]").contains("dpoo"));
    let e = match TrainConfig::load(None, &["data.paths=[\"/nonexistent/x.jsonl\"]".to_string()]) {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("missing file accepted"),
    };
    assert!(e.contains("/nonexistent/x.jsonl"), "{e}");
    let toml = d.path().join("bad.toml");
    std::fs::write(&toml, "[optim]\nlr = \"fast\"\n").unwrap();
    let e = format!("{:#}", TrainConfig::load(Some(&toml), &[]).unwrap_err());
    assert!(e.contains("bad.toml") && e.contains("lr"), "{e}");
}

#[test]
fn lora_run_learns_with_lora_off_reference_and_exports_peft_and_merged() {
    let lora = ["adapter.method=\"lora\"", "adapter.lora.rank=4", "adapter.lora.alpha=8.0", "optim.lr=0.01"];
    // The reference by switching the adapters off equals a frozen copy of the base.
    let a = tempfile::tempdir().unwrap();
    let mut x: Vec<&str> = lora.to_vec();
    x.push("reference.mode=\"lora_off\"");
    train(&config(a.path(), "epa", 12, &x), None).unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut y: Vec<&str> = lora.to_vec();
    y.push("reference.mode=\"frozen\"");
    train(&config(b.path(), "epa", 12, &y), None).unwrap();
    let (ra, rb) = (metric_rows(a.path()), metric_rows(b.path()));
    for (p, q) in ra.iter().zip(&rb) {
        let (lp, lq) = (p["loss"].as_f64().unwrap(), q["loss"].as_f64().unwrap());
        assert!((lp - lq).abs() < 1e-5, "lora_off {lp} vs frozen {lq}");
    }
    assert!(mean(&ra[9..], "loss") < mean(&ra[..3], "loss"), "LoRA run should lower the loss");
    let adapter = a.path().join("run/adapter");
    assert!(adapter.join("adapter_config.json").exists() && adapter.join("adapter_model.safetensors").exists());
    assert!(a.path().join("run/final/model.safetensors").exists(), "merged model exported");
    // lora_off with full fine-tuning is refused.
    let d = tempfile::tempdir().unwrap();
    let data = write_data(d.path());
    let e = TrainConfig::load(
        None,
        &[format!("data.paths=[{:?}]", data.display().to_string()), "reference.mode=\"lora_off\"".into()],
    );
    assert!(format!("{:#}", e.unwrap_err()).contains("lora_off"));
}

#[test]
fn gradient_checkpointing_and_padded_layout_change_nothing_but_cost() {
    let base = tempfile::tempdir().unwrap();
    train(&config(base.path(), "epa", 3, &[]), None).unwrap();
    for extra in ["model.gradient_checkpointing=true", "model.prefix_sharing=false"] {
        let d = tempfile::tempdir().unwrap();
        train(&config(d.path(), "epa", 3, &[extra]), None).unwrap();
        for (x, y) in metric_rows(base.path()).iter().zip(&metric_rows(d.path())) {
            let (a, b) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{extra}: loss {a} vs {b}");
        }
    }
}

/// SIGKILL at random moments of a run that checkpoints every step: whatever the moment, the
/// newest checkpoint left behind loads and resumes.
#[test]
fn sigkill_during_checkpointing_leaves_a_loadable_checkpoint() {
    use std::process::Command;
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "epa", 400, &["output.save_every_steps=1", "output.keep_last=2"]);
    let toml_path = d.path().join("run.toml");
    std::fs::write(&toml_path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut kills = 0;
    let mut resumed = 0;
    for delay_ms in [900u64, 1300, 1700, 2100, 2600] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_epa"))
            .args(["train", "--overwrite", "--config"])
            .arg(&toml_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let run = d.path().join("run");
        if epa::train::checkpoint::list(&run).is_empty() {
            continue; // killed before the first checkpoint
        }
        // The newest checkpoint is complete and loadable: resume one more step from it.
        let ckpt = epa::train::checkpoint::resolve(&run).unwrap();
        let step: usize = ckpt.file_name().unwrap().to_str().unwrap()["checkpoint-".len()..].parse().unwrap();
        let mut more = cfg.clone();
        more.optim.max_steps = step + 1;
        more.output.save_every_steps = 0;
        more.output.export = false;
        let opts = epa::train::RunOptions { resume: Some(ckpt.clone()), allow_config_change: true, collective: None };
        let s = epa::train::train_with(&more, &opts, None).unwrap();
        assert_eq!(s.resumed_from, Some(step));
        assert_eq!(s.steps, step + 1);
        resumed += 1;
    }
    assert!(resumed >= 3, "only {resumed} kills left a checkpoint to resume from");
    assert!(kills >= 3, "the runs should have been killed mid-way");
}

#[test]
fn slope1_metrics_are_kept_with_weak_negatives_and_losses_needing_scores_refuse_them() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("scored.jsonl");
    let mut s = String::new();
    for (i, t) in TOPICS.iter().enumerate() {
        let row = serde_json::json!({
            "prompt": format!("Describe {t} in one sentence."),
            "chosen": format!("{t} is calm, bright and kind."),
            "rejected": [format!("I do not know anything about {t}."), format!("{t} is dull.")],
            "score_chosen": 1.0 + i as f64 * 0.1,
            "score_rejected": [-1.0, 0.25],
        });
        s.push_str(&row.to_string());
        s.push('\n');
    }
    std::fs::write(&path, s).unwrap();
    let data = format!("data.paths=[{:?}]", path.display().to_string());
    train(&config(d.path(), "epa", 3, &[&data]), None).unwrap();
    let rows = metric_rows(d.path());
    for r in &rows {
        assert!(r["rewards/weak"].as_f64().is_some(), "weak columns were scored: {r}");
        let (p, e) = (r["slope1/pearson"].as_f64(), r["slope1/eps"].as_f64());
        assert!(e.is_some_and(|e| e.is_finite() && e >= 0.0), "{r}");
        if r["step"] == 1 {
            // The policy is the reference: every learned reward is exactly 0, Pearson undefined.
            assert!(p.is_none(), "{r}");
        } else {
            assert!(p.is_some_and(|p| (-1.0..=1.0).contains(&p)), "{r}");
        }
    }
    // InfoNCA needs every candidate's true score; weak negatives have none for this prompt.
    let err = train(&config(d.path(), "infonca", 1, &[&data, "output.overwrite=true"]), None).unwrap_err();
    assert!(format!("{err:#}").contains("data.weak.k = 0"), "{err:#}");
    // Without weak negatives it runs.
    train(&config(d.path(), "infonca", 1, &[&data, "data.weak.k=0", "output.overwrite=true"]), None).unwrap();
}

#[test]
fn bf16_mixed_precision_learns_and_keeps_float32_weights() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "epa", 24, &["model.dtype=\"bfloat16\"", "reference.mode=\"cached\""]);
    if cfg.model.dtype.check(cfg.model.device, &crate::common::device()).is_err() {
        eprintln!("{}: no bf16 arithmetic, not run there", crate::common::spec());
        return;
    }
    train(&cfg, None).unwrap();
    let rows = metric_rows(d.path());
    let (early, late) = (&rows[..3], &rows[21..]);
    assert!(
        mean(late, "loss") < mean(early, "loss") - 0.1,
        "bf16: loss {} → {}",
        mean(early, "loss"),
        mean(late, "loss")
    );
    assert!(mean(late, "rewards/accuracies") >= 0.9, "bf16: {}", mean(late, "rewards/accuracies"));
    // The master weights stay float32: had they been held in bf16, every exported value would be
    // a bf16 number (its low 16 bits zero).
    let st = std::fs::read(d.path().join("run/final/model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&st).unwrap();
    for (name, v) in tensors.tensors() {
        let words = v.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        assert!(
            words.clone().count() < 2 || words.filter(|w| w & 0xffff != 0).count() > 0,
            "{name} holds only bf16 values"
        );
    }
    // A bf16 reference is cached apart from a float32 one: a float32 run on the same data and
    // cache folder computes its own.
    let out = format!("output.dir={:?}", d.path().join("f32").display().to_string());
    let s = train(&config(d.path(), "epa", 1, &["reference.mode=\"cached\"", &out]), None).unwrap();
    assert!(s.reference_pairs_computed > 0);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_not_built_in_says_how_to_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "dpo", 1, &["model.device=\"cuda:1\""]);
    let e = format!("{:#}", train(&cfg, None).unwrap_err());
    assert!(e.contains("cuda:1") && e.contains("--features cuda"), "{e}");
    // A device name that is not one gives the list of those that are.
    let e = format!("{:#}", TrainConfig::load(None, &["model.device=\"tpu\"".to_string()]).unwrap_err());
    assert!(e.contains("\"tpu\"") && e.contains("cuda:N"), "{e}");
}

/// The library path: a `Trainer` on groups built in memory (no data file, no tokenizer pass), as
/// `epa iterate` uses it.
#[test]
fn trainer_trains_on_groups_built_in_memory() {
    use epa::data::{TokenCandidate, TokenGroup};
    use epa::{GroupStore, Trainer, training_device};
    let d = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::default();
    cfg.model.path = fixture("tiny-llama").display().to_string();
    cfg.model.device = crate::common::spec();
    cfg.loss = epa::LossConfig::from_names(&["dpo"], None).unwrap();
    cfg.optim.max_steps = 2;
    cfg.output.dir = d.path().join("run");
    cfg.output.progress = false;
    let cand = |ids: &[u32]| TokenCandidate { ids: ids.to_vec(), score: None };
    let groups = (0..4u32).map(|g| TokenGroup {
        prompt_ids: vec![1, 10 + g, 20 + g],
        positive: cand(&[30 + g, 31, 2]),
        strong: vec![cand(&[40 + g, 2])],
    });
    let store = GroupStore::from_tokens(groups);
    let lm = epa::load_model(&cfg.model.path, &training_device(&cfg).unwrap()).unwrap();
    let mut t = Trainer::new(cfg, lm, &store).unwrap();
    let first = t.step().unwrap().unwrap();
    assert_eq!(first["rewards/margins"], 0.0, "{first:?}");
    assert!((first["loss"] - std::f64::consts::LN_2).abs() < 1e-6, "{first:?}");
    t.log(&first).unwrap();
    let second = t.step().unwrap().unwrap();
    assert!(second["loss"].is_finite() && t.is_done());
    let s = t.finish(None).unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.tokens > 0);
    assert!(d.path().join("run/final/model.safetensors").exists());
}
