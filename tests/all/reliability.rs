//! What a hostile but realistic user runs into (issue 14): reused and shared output folders, kills at
//! every file-system step of checkpointing and metrics writing, non-finite losses, models whose
//! parts do not match, data files that are almost right. Each case fails clearly or works; none
//! panics, none loses what was written.

use crate::common::fixture;
use epa::train::{RunOptions, TrainConfig, train, train_with};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::train::write_data;

/// The training tests' setup (tiny model, 12 prompts, EPA with 2 weak negatives), `steps` steps.
fn config(dir: &Path, steps: usize, extra: &[&str]) -> TrainConfig {
    crate::train::config(dir, "epa", steps, extra)
}

fn err(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

fn resume(dir: &Path) -> RunOptions {
    RunOptions { resume: Some(dir.join("run")), ..Default::default() }
}

fn rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Item 1: a fresh run into a folder holding an earlier run refuses; `overwrite` replaces it.
#[test]
fn a_fresh_run_refuses_a_folder_holding_an_earlier_run() {
    let d = tempfile::tempdir().unwrap();
    train(&config(d.path(), 4, &["output.save_every_steps=2", "output.keep_last=5"]), None).unwrap();
    let e = err(train(&config(d.path(), 2, &[]), None));
    assert!(e.contains("holds an earlier run") && e.contains("--resume") && e.contains("--overwrite"), "{e}");
    assert!(e.contains("newest at step 4"), "{e}");
    assert_eq!(rows(d.path()).len(), 4, "the refused run must not touch the earlier one");
    // Overwrite: the old run's checkpoints go, so a later resume cannot pick up the old step 4.
    train(&config(d.path(), 2, &["output.overwrite=true", "output.final_checkpoint=false"]), None).unwrap();
    assert!(epa::train::checkpoint::list(&d.path().join("run")).is_empty());
    assert_eq!(rows(d.path()).len(), 2);
}

/// Item 2: a second run into a folder another run holds fails at once, naming the holder.
#[test]
fn a_second_run_into_a_locked_folder_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let held = epa::train::run_dir::RunDir::open(&d.path().join("run"), epa::train::run_dir::Start::Fresh).unwrap();
    let e = err(train(&config(d.path(), 1, &[]), None));
    assert!(e.contains("in use by another epa run") && e.contains(&format!("pid {}", std::process::id())), "{e}");
    drop(held);
    // Released (as the kernel releases it when the holder dies): the run goes ahead.
    train(&config(d.path(), 1, &[]), None).unwrap();
}

/// Items 3 and 9: a non-finite loss goes through `optim.on_non_finite` (the loss code does not abort
/// first): `stop` names the step, `skip` skips; a run whose every step was skipped fails loudly.
#[test]
fn non_finite_losses_follow_on_non_finite() {
    let d = tempfile::tempdir().unwrap();
    // A learning rate this large makes the weights non-finite after one step.
    let e = err(train(&config(d.path(), 3, &["optim.lr=1e38"]), None));
    assert!(e.contains("non-finite loss at optimiser step 2"), "{e}");

    let d = tempfile::tempdir().unwrap();
    let s =
        train(&config(d.path(), 3, &["optim.lr=1e38", "optim.on_non_finite=\"skip\"", "output.export=false"]), None)
            .unwrap();
    assert_eq!(s.steps, 3);
    assert_eq!(rows(d.path()).len(), 1, "steps 2 and 3 were skipped, not logged");
    // Continuing from that (non-finite) checkpoint: every step is skipped → an error, nothing exported.
    let cfg = config(d.path(), 5, &["optim.lr=1e38", "optim.on_non_finite=\"skip\""]);
    let e = err(train_with(&cfg, &RunOptions { allow_config_change: true, ..resume(d.path()) }, None));
    assert!(e.contains("every one of the 2 optimiser steps of this run was skipped"), "{e}");
    assert!(!d.path().join("run/final").exists());
}

/// Item 11: resuming under a changed config lists the changes and refuses unless allowed.
#[test]
fn resume_under_a_changed_config_lists_the_changes() {
    let d = tempfile::tempdir().unwrap();
    train(&config(d.path(), 2, &[]), None).unwrap();
    let changed = config(d.path(), 3, &["optim.lr=0.001"]);
    let e = err(train_with(&changed, &resume(d.path()), None));
    assert!(e.contains("optim.lr: 0.003 → 0.001") && e.contains("optim.max_steps: 2 → 3"), "{e}");
    assert!(e.contains("--allow-config-change"), "{e}");
    let s = train_with(&changed, &RunOptions { allow_config_change: true, ..resume(d.path()) }, None).unwrap();
    assert_eq!((s.resumed_from, s.steps), (Some(2), 3));
    // Where it runs and how it shows progress are not part of what it computes.
    let moved = config(d.path(), 3, &["optim.lr=0.001", "output.progress=true"]);
    train_with(&moved, &resume(d.path()), None).unwrap();
}

/// Item 12: resuming a finished run with evaluation does not log its final evaluation twice.
#[test]
fn resuming_a_finished_run_does_not_duplicate_its_eval_row() {
    let d = tempfile::tempdir().unwrap();
    let eval = write_data(d.path());
    let e = format!("eval.paths=[{:?}]", eval.display().to_string());
    let cfg = config(d.path(), 2, &[&e]);
    train(&cfg, None).unwrap();
    let before = rows(d.path());
    assert_eq!(before.len(), 3, "two steps and the final evaluation");
    train_with(&cfg, &resume(d.path()), None).unwrap();
    assert_eq!(rows(d.path()), before);
}

/// Item 10: what a killed run leaves (half-written checkpoint folders, a checkpoint without
/// state.json, temporary files) is cleaned on the next start; a checkpoint moved aside to be
/// replaced is put back.
#[test]
fn leftovers_of_a_killed_run_are_cleaned_on_resume() {
    let d = tempfile::tempdir().unwrap();
    train(&config(d.path(), 2, &["output.export=false"]), None).unwrap();
    let run = d.path().join("run");
    // The final checkpoint was being replaced when the run died: it sits aside, nothing in place.
    std::fs::rename(run.join("checkpoint-000002"), run.join(".checkpoint-000002.old-4242")).unwrap();
    std::fs::create_dir_all(run.join(".checkpoint-000003.tmp-4242")).unwrap();
    std::fs::write(run.join(".checkpoint-000003.tmp-4242/model.bpk"), b"half").unwrap();
    std::fs::create_dir_all(run.join("checkpoint-000009")).unwrap(); // no state.json
    std::fs::write(run.join(".metrics.jsonl.4242.tmp"), b"{").unwrap();
    let s = train_with(&config(d.path(), 2, &["output.export=false"]), &resume(d.path()), None).unwrap();
    assert_eq!(s.resumed_from, Some(2), "the checkpoint moved aside is put back and resumed");
    let left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.contains(".old-") || n == "checkpoint-000009")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Item 13: a write that fails names the file.
#[test]
fn write_errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    // A folder where the run wants a file: the write fails (whatever the user's permissions).
    std::fs::create_dir_all(d.path().join("run/config.toml/x")).unwrap();
    let e = err(train(&config(d.path(), 1, &[]), None));
    assert!(e.contains("config.toml"), "{e}");
    // An output folder below a file.
    std::fs::write(d.path().join("plain"), b"").unwrap();
    let mut cfg = config(d.path(), 1, &[]);
    cfg.output.dir = d.path().join("plain/run");
    let e = err(train(&cfg, None));
    assert!(e.contains("plain/run"), "{e}");
}

/// A copy of the tiny model with its config edited and its tensors passed through `edit`.
fn edited_model(
    dir: &Path,
    config: impl Fn(&mut serde_json::Value),
    edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>),
) -> PathBuf {
    let src = fixture("tiny-llama");
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut c);
    std::fs::write(out.join("config.json"), c.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let mut data: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let mut shape = view.shape().to_vec();
        edit(&name, &mut shape, &mut data);
        tensors.push((name, shape, data));
    }
    std::fs::write(out.join("model.safetensors"), epa::model::save::safetensors_bytes(&tensors).unwrap()).unwrap();
    out
}

/// Item 4: a tokenizer with ids past the model's vocabulary is refused at load, not a panic later.
#[test]
fn a_tokenizer_larger_than_the_vocabulary_is_refused_at_load() {
    let d = tempfile::tempdir().unwrap();
    let m = edited_model(
        d.path(),
        |c| c["vocab_size"] = 100.into(),
        |name, shape, data| {
            if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
                shape[0] = 100;
                data.truncate(100 * shape[1]);
            }
        },
    );
    let e = err(epa::model::load::load_model(m.to_str().unwrap(), &crate::common::device()).map(|_| ()));
    assert!(e.contains("tokenizer has ids up to 511") && e.contains("vocabulary is 100"), "{e}");
}

/// Item 5: weights the config does not use are an error listing them (here: one layer configured,
/// two saved).
#[test]
fn weights_the_config_does_not_use_are_an_error() {
    let d = tempfile::tempdir().unwrap();
    let m = edited_model(d.path(), |c| c["num_hidden_layers"] = 1.into(), |_, _, _| {});
    let e = err(epa::model::load::load_model(m.to_str().unwrap(), &crate::common::device()).map(|_| ()));
    assert!(e.contains("not used by the config (1 layers") && e.contains("`model.layers.1."), "{e}");
}

/// Item 20: sequences longer than `max_position_embeddings` are refused, in training, scoring and
/// generation.
#[test]
fn sequences_past_max_position_embeddings_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = edited_model(d.path(), |c| c["max_position_embeddings"] = 12.into(), |_, _, _| {});
    let model = format!("model.path={:?}", m.display().to_string());
    let e = err(train(&config(d.path(), 1, &[&model]), None));
    assert!(e.contains("max_position_embeddings = 12") && e.contains("prefs.jsonl: line"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_epa"))
        .args(["generate", "--model", m.to_str().unwrap(), "--prompt", "hi", "--max-new-tokens", "40"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("max_position_embeddings = 12"), "{stderr}");
    let pairs = d.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"prompt\": \"Describe the sea in one long sentence.\", \"response\": \"It is wide and deep and blue.\"}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_epa"))
        .args(["score", "--model", m.to_str().unwrap(), "--data", pairs.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("pairs.jsonl:1") && stderr.contains("max_position_embeddings = 12"),
        "{stderr}"
    );
}

/// Item 19: sampling settings that mean nothing are refused.
#[test]
fn generate_refuses_meaningless_sampling_settings() {
    for (flag, value) in
        [("--temperature", "NaN"), ("--temperature", "-1"), ("--top-p", "0"), ("--top-p", "NaN"), ("--top-p", "2")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_epa"))
            .args([
                "generate",
                "--model",
                fixture("tiny-llama").to_str().unwrap(),
                "--prompt",
                "hi",
                &format!("{flag}={value}"),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1) && stderr.contains(&flag[2..].replace('-', "_")),
            "{flag} {value}: {stderr}"
        );
    }
}

/// Item 18: an eval set whose rows are all dropped says it is the eval set.
#[test]
fn an_empty_eval_set_says_it_is_the_eval_set() {
    let d = tempfile::tempdir().unwrap();
    let eval = d.path().join("eval.jsonl");
    std::fs::write(&eval, "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \" \"}\n").unwrap();
    let e = format!("eval.paths=[{:?}]", eval.display().to_string());
    let e = err(train(&config(d.path(), 1, &[&e]), None));
    assert!(e.contains("eval set") && e.contains("eval.jsonl: line 1: field `rejected`"), "{e}");
    // Every row dropped by a rule (here: a chat template that refuses the conversation, whose own
    // message must show).
    let template = "{% for m in messages %}{% if m['role'] == 'user' and 'secret' in m['content'] %}\
                    {{ raise_exception('no secrets in this template') }}{% endif %}{{ m['content'] }}{% endfor %}";
    let rows =
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"a secret\"}], \"chosen\": \"c\", \"rejected\": \"r\"}\n";
    std::fs::write(&eval, rows).unwrap();
    let m = edited_model(d.path(), |_| {}, |_, _, _| {});
    std::fs::write(m.join("chat_template.jinja"), template).unwrap();
    let m = format!("model.path={:?}", m.display().to_string());
    let e = format!("eval.paths=[{:?}]", eval.display().to_string());
    let e = err(train(&config(d.path(), 1, &[&e, &m]), None));
    assert!(
        e.contains("the eval set (eval.paths) has no groups left") && e.contains("no secrets in this template"),
        "{e}"
    );
}

/// Kills the run (as SIGKILL would) at every file-system step of checkpointing and metrics writing
/// (`EPA_FAULT_AT=N`), then resumes: each time the resumed run ends exactly where an uninterrupted
/// one does (same weights, same metric rows), or, killed before the first checkpoint, `--resume`
/// says so clearly and `--overwrite` starts afresh. Also kills a resumption of a finished run,
/// which rewrites the metrics log and re-saves the final checkpoint in place.
#[test]
fn a_kill_at_any_file_system_step_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let steps = 3;
    let extra = ["output.save_every_steps=1", "output.keep_last=1"];
    let toml_path = d.path().join("run.toml");
    std::fs::write(&toml_path, toml::to_string(&config(d.path(), steps, &extra)).unwrap()).unwrap();
    let epa = |args: &[&str], fault: Option<usize>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_epa"));
        c.arg("train").arg("--config").arg(&toml_path).args(args);
        if let Some(n) = fault {
            c.env("EPA_FAULT_AT", n.to_string());
        }
        c.output().unwrap()
    };
    let run = d.path().join("run");
    let golden_dir = d.path().join("golden");
    let snapshot = |dir: &Path| {
        let ck = epa::train::checkpoint::resolve(dir).unwrap();
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_s");
                v
            })
            .collect();
        // The exported weights and the checkpoint's trainer state (the .bpk records hold random
        // parameter ids, so their bytes differ between identical runs).
        (
            std::fs::read(dir.join("final/model.safetensors")).unwrap(),
            std::fs::read(ck.join("state.json")).unwrap(),
            rows,
        )
    };
    let out = epa(&[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&run, &golden_dir).unwrap();
    let golden = snapshot(&golden_dir);
    assert_eq!(golden.2.len(), steps);

    // Phase 1: kills during a fresh run.
    let mut n = 1;
    loop {
        let out = epa(&[], Some(n));
        if out.status.success() {
            break; // past the last fault point
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("EPA_FAULT_AT={n}")), "fault {n}: {stderr}");
        // The resumption is killed too, at its own first step (where it trims the metrics log when
        // the log ran ahead of the checkpoint), before the resumption that finishes.
        let _ = epa(&["--resume", run.to_str().unwrap()], Some(1));
        let out = epa(&["--resume", run.to_str().unwrap()], None);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("holds no checkpoint"), "fault {n}: resume failed unclearly: {stderr}");
            let out = epa(&["--overwrite"], None);
            assert!(out.status.success(), "fault {n}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(snapshot(&run) == golden, "fault {n}: the resumed run differs from the uninterrupted one");
        std::fs::remove_dir_all(&run).unwrap();
        n += 1;
    }
    assert!(n > 20, "only {n} fault points in a {steps}-step run checkpointing every step");

    // Phase 2: kills while resuming the finished run (metrics rewritten, final checkpoint replaced).
    let mut m = 1;
    loop {
        copy_dir(&golden_dir, &run);
        let out = epa(&["--resume", run.to_str().unwrap()], Some(m));
        if out.status.success() {
            break;
        }
        let out = epa(&["--resume", run.to_str().unwrap()], None);
        assert!(out.status.success(), "fault {m}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(snapshot(&run) == golden, "phase 2, fault {m}: state differs");
        std::fs::remove_dir_all(&run).unwrap();
        m += 1;
    }
    assert!(m > 5, "resuming a finished run passes only {m} fault points");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn load(path: &Path, skip: bool) -> anyhow::Result<(usize, epa::data::DataReport)> {
    let mut cfg = epa::data::DataConfig::for_path(path);
    if skip {
        cfg.on_bad_row = epa::data::OnBadRow::Skip;
    }
    epa::data::load_groups(&cfg).map(|(g, r)| (g.len(), r))
}

/// Items 6 and 16: the shape of a JSON Lines file is not decided by row 1 alone. A later row with
/// the fields of another shape is a bad row (its real `prompt` is never silently ignored), and a
/// row 1 that fits no shape is a bad row that `on_bad_row = "skip"` skips.
#[test]
fn rows_of_another_shape_than_the_file_are_bad_rows() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mixed.jsonl");
    std::fs::write(
        &p,
        "{\"chosen\": \"Q: hi A: good\", \"rejected\": \"Q: hi A: bad\"}\n\
         {\"prompt\": \"Q: yo\", \"chosen\": \"fine\", \"rejected\": \"poor\"}\n",
    )
    .unwrap();
    let e = format!("{:#}", load(&p, false).unwrap_err());
    assert!(
        e.contains("mixed.jsonl: line 2")
            && e.contains("make a standard row, but this file's rows are implicit (decided by line 1)"),
        "{e}"
    );
    let (groups, report) = load(&p, true).unwrap();
    assert_eq!((groups, report.rows_dropped()), (1, 1));

    let p = d.path().join("first-bad.jsonl");
    std::fs::write(
        &p,
        "{\"prompt\": \"p\", \"chosen\": \"c\"}\n{\"prompt\": \"q\", \"chosen\": \"c\", \"rejected\": \"r\"}\n",
    )
    .unwrap();
    let e = format!("{:#}", load(&p, false).unwrap_err());
    assert!(e.contains("first-bad.jsonl: line 1") && e.contains("cannot tell the dataset shape"), "{e}");
    let (groups, report) = load(&p, true).unwrap();
    assert_eq!((groups, report.rows_dropped()), (1, 1));
}

/// Items 14 and 15: a UTF-8 byte order mark is skipped (JSON Lines and JSON arrays), and a
/// pretty-printed object in a `.json` file gets a message that says what is expected.
#[test]
fn byte_order_marks_and_pretty_printed_objects() {
    let d = tempfile::tempdir().unwrap();
    let row = "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}";
    for (name, body) in
        [("bom.jsonl", format!("\u{feff}{row}\n{row}\n")), ("bom.json", format!("\u{feff}[{row}, {row}]"))]
    {
        let p = d.path().join(name);
        std::fs::write(&p, body).unwrap();
        assert_eq!(load(&p, false).unwrap().0, 2, "{name}");
    }
    let p = d.path().join("pretty.json");
    std::fs::write(&p, "{\n  \"prompt\": \"p\",\n  \"chosen\": \"c\",\n  \"rejected\": \"r\"\n}\n").unwrap();
    let e = format!("{:#}", load(&p, false).unwrap_err());
    assert!(e.contains("pretty.json: expected an array of rows") && e.contains("JSON Lines"), "{e}");
}

/// Item 17: a weak-negative count far beyond the data is bounded by it (it hung before).
#[test]
fn a_huge_weak_k_is_bounded_by_the_data() {
    let d = tempfile::tempdir().unwrap();
    let s = train(
        &config(d.path(), 1, &["data.weak.k=100000000000", "data.weak.scope=\"dataset\"", "output.export=false"]),
        None,
    )
    .unwrap();
    // 12 prompts × 2 answers: every prompt gets the 22 answers written for the others.
    assert!(s.first["logps/weak"].is_finite());
    assert_eq!(s.steps, 1);
}
