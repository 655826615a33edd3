//! Data-parallel training (src/distributed/). `epa train --devices cpu,cpu` (two ranks as threads
//! of one process) must train as one device with the doubled batch. With `--features mpi` (CI's MPI stage:
//! `scripts/test-mpi.sh`) the tests launch `mpirun -np 2 epa train …` on the tiny fixture and check
//! DDP's promise: two ranks of P prompts train exactly as one rank of 2P (metrics and weights to
//! float tolerance), only rank 0 writes, a rank killed with `kill -9` ends the job and the job resumes
//! to the same weights as an uninterrupted run, and a resume under another global batch is refused
//! with how to resume. Without the feature, a launch by `mpirun` is refused with how to rebuild.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// `epa train` arguments: EPA with weak negatives on the tiny fixture, `prompts` per rank.
fn args(dir: &Path, out: &str, prompts: usize, steps: usize, extra: &[&str]) -> Vec<String> {
    let data = crate::train::write_data(dir);
    let mut sets = vec![
        format!("model.path={:?}", crate::common::fixture("tiny-llama").display().to_string()),
        format!("data.paths=[{:?}]", data.display().to_string()),
        // 11 groups: the global batch of 4 leaves a last batch of 3, split 2 + 1 between two ranks.
        "data.max_rows=11".into(),
        format!("data.batch.prompts_per_batch={prompts}"),
        "data.weak.k=2".into(),
        "loss.terms=[{name=\"epa\", beta=0.5}]".into(),
        "optim.lr=0.003".into(),
        "optim.warmup_steps=1".into(),
        format!("optim.max_steps={steps}"),
        "output.save_every_steps=2".into(),
        "output.progress=false".into(),
        format!("output.dir={:?}", dir.join(out).display().to_string()),
        format!("reference.cache_dir={:?}", dir.join(format!("cache-{out}")).display().to_string()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut a = vec!["train".to_string()];
    for s in sets {
        a.push("--set".into());
        a.push(s);
    }
    a
}

fn epa(args: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epa")).args(args).envs(env.iter().copied()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// metrics.jsonl without the timing column.
fn metrics(run: &Path) -> Vec<BTreeMap<String, f64>> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut m: BTreeMap<String, f64> = serde_json::from_str(l).unwrap();
            m.remove("tokens_per_s");
            m
        })
        .collect()
}

fn weights(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(run.join("final/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            (name, t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
        })
        .collect()
}

/// Every metric of every row within `tol` relative (1e-7 absolute for values near 0).
fn assert_metrics_close(a: &[BTreeMap<String, f64>], b: &[BTreeMap<String, f64>], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
        for (k, x) in ra {
            let y = rb[k];
            assert!((x - y).abs() <= tol * x.abs().max(y.abs()) + 1e-7, "{k}: {x} vs {y} (step {})", ra["step"]);
        }
    }
}

/// Every tensor within `tol` of its largest magnitude; returns the worst relative difference.
fn assert_weights_close(a: &Path, b: &Path, tol: f32) -> f32 {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (name, x) in &wa {
        let y = &wb[name];
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff <= tol * scale, "{name}: max |Δ| {diff} vs max |w| {scale}");
        worst = worst.max(diff / scale);
    }
    worst
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".epa.lock"))
        .collect();
    v.sort();
    v
}

#[test]
fn two_devices_in_one_process_train_as_one_device_with_the_doubled_batch() {
    let d = tempfile::tempdir().unwrap();
    ok(epa(&args(d.path(), "one", 4, 4, &[]), &[]));
    let mut two = args(d.path(), "two", 2, 4, &[]);
    two.extend(["--devices".into(), "cpu,cpu".into()]);
    let out = ok(epa(&two, &[]));
    let (m1, m2) = (metrics(&d.path().join("one")), metrics(&d.path().join("two")));
    assert!(m1[3]["loss"] < m1[0]["loss"], "it learns");
    assert_metrics_close(&m1, &m2, 1e-5);
    assert_weights_close(&d.path().join("one"), &d.path().join("two"), 1e-5);
    assert_eq!(files(&d.path().join("one")), files(&d.path().join("two")));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    assert_eq!(summary["steps"], 4);
    // NCCL is for CUDA GPUs only.
    let mut nccl = args(d.path(), "three", 2, 1, &[]);
    nccl.extend(["--devices".into(), "cpu,cpu".into(), "--nccl".into()]);
    let o = epa(&nccl, &[]);
    assert!(!o.status.success() && text(&o).contains("--nccl needs every device"), "{}", text(&o));
}

#[cfg(not(feature = "mpi"))]
#[test]
fn an_mpirun_launch_without_the_mpi_feature_is_refused_with_how_to_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let o = epa(&args(d.path(), "run", 2, 1, &[]), &[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "0")]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("built without the `mpi` feature") && t.contains("--features mpi"), "{t}");
    assert!(!d.path().join("run").exists(), "nothing is written");
}

#[test]
fn a_torchrun_launch_is_refused_with_how_to_launch() {
    let d = tempfile::tempdir().unwrap();
    let o = epa(&args(d.path(), "run", 2, 1, &[]), &[("WORLD_SIZE", "2"), ("RANK", "0")]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("WORLD_SIZE=2") && t.contains("mpirun -np 2"), "{t}");
}

#[cfg(feature = "mpi")]
mod mpi {
    use super::*;

    /// `mpirun -np <np> epa <args>` (one thread per rank; Open MPI's flags for root in containers).
    fn mpirun(np: usize, args: &[String], env: &[(&str, &str)]) -> Output {
        Command::new("mpirun")
            .args(["-np", &np.to_string(), "--oversubscribe", env!("CARGO_BIN_EXE_epa")])
            .args(args)
            .envs([
                ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
                ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
                ("RAYON_NUM_THREADS", "1"),
            ])
            .envs(env.iter().copied())
            .output()
            .expect("mpirun (Open MPI) on PATH")
    }

    #[test]
    fn two_ranks_of_p_prompts_train_as_one_rank_of_2p() {
        let d = tempfile::tempdir().unwrap();
        ok(epa(&args(d.path(), "one", 4, 4, &[]), &[]));
        let two = ok(mpirun(2, &args(d.path(), "two", 2, 4, &[]), &[]));
        let (m1, m2) = (metrics(&d.path().join("one")), metrics(&d.path().join("two")));
        assert_eq!(m1.len(), 4);
        assert!(m1[3]["loss"] < m1[0]["loss"], "it learns");
        assert_metrics_close(&m1, &m2, 1e-5);
        let worst = assert_weights_close(&d.path().join("one"), &d.path().join("two"), 1e-5);
        eprintln!("worst relative weight difference: {worst:e}");

        // Rank 0 alone writes: the same files as the one-rank run, one summary on stdout.
        assert_eq!(files(&d.path().join("one")), files(&d.path().join("two")));
        assert_eq!(
            files(&d.path().join("two")),
            ["checkpoint-000002", "checkpoint-000004", "config.toml", "final", "metrics.jsonl"]
        );
        let summary: serde_json::Value = serde_json::from_slice(&two.stdout).expect("one JSON summary");
        assert_eq!(summary["steps"], 4);
        assert_eq!(files(&d.path().join("cache-two")).len(), 1);
        // The reference cache: every pair once, the same values as the one-rank run's.
        let cache = |run: &str| {
            let dir = d.path().join(format!("cache-{run}"));
            let f = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
            serde_json::from_str::<Vec<(usize, usize, f32)>>(&std::fs::read_to_string(f).unwrap()).unwrap()
        };
        let (c1, c2) = (cache("one"), cache("two"));
        assert_eq!(c1.len(), c2.len());
        for (a, b) in c1.iter().zip(&c2) {
            assert_eq!((a.0, a.1), (b.0, b.1));
            assert!((a.2 - b.2).abs() <= 1e-5 * a.2.abs(), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_rank_killed_mid_run_ends_the_job_and_the_job_resumes_to_the_same_weights() {
        let d = tempfile::tempdir().unwrap();
        let a = args(d.path(), "run", 2, 6, &[]);
        let killed = mpirun(2, &a, &[("EPA_FAULT_KILL", "1:3")]);
        assert!(!killed.status.success());
        let t = text(&killed);
        assert!(t.contains("rank 1") && t.contains("signal 9"), "mpirun says which rank died and how: {t}");
        assert_eq!(files(&d.path().join("run")), ["checkpoint-000002", "config.toml", "metrics.jsonl"]);

        let mut resume = a.clone();
        resume.extend(["--resume".into(), d.path().join("run").display().to_string()]);
        let resumed = ok(mpirun(2, &resume, &[]));
        assert!(text(&resumed).contains("resumed from") && text(&resumed).contains("at step 2"));
        ok(mpirun(2, &args(d.path(), "whole", 2, 6, &[]), &[]));
        // Bit-exact: the same weights and metrics as the run that was never interrupted.
        let (w1, w2) = (weights(&d.path().join("run")), weights(&d.path().join("whole")));
        assert!(w1 == w2, "weights differ after resume");
        assert_eq!(metrics(&d.path().join("run")), metrics(&d.path().join("whole")));
    }

    #[test]
    fn resume_under_another_global_batch_is_refused_and_the_same_global_batch_resumes() {
        let d = tempfile::tempdir().unwrap();
        ok(mpirun(2, &args(d.path(), "two", 2, 4, &[]), &[]));
        let ckpt = d.path().join("two/checkpoint-000002").display().to_string();
        // One rank × 2 prompts: another global batch.
        let mut same_per_rank = args(d.path(), "two", 2, 4, &[]);
        same_per_rank.extend(["--resume".into(), ckpt.clone()]);
        let o = epa(&same_per_rank, &[]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(
            t.contains("global batch of 4 prompts (2 rank(s) × 2)")
                && t.contains("this run's is 2")
                && t.contains("data.batch.prompts_per_batch = 4"),
            "{t}"
        );
        // One rank × 4 prompts: the same global batch, so the same run.
        let mut same_global = args(d.path(), "one", 4, 4, &[]);
        std::fs::create_dir_all(d.path().join("one")).unwrap();
        same_global.extend(["--resume".into(), ckpt, "--allow-config-change".into()]);
        ok(epa(&same_global, &[]));
        assert_weights_close(&d.path().join("one"), &d.path().join("two"), 1e-5);
        let (m1, m2) = (metrics(&d.path().join("one")), metrics(&d.path().join("two")));
        assert_metrics_close(&m1[..], &m2[2..], 1e-5);
    }
}
