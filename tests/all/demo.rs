//! The controlled experiment's whole path on the tiny preset (the fixture model, seconds): data
//! generation, three methods × two seeds trained through `epa train`, evaluation, the report.
//! Checks the report's structure, that every number that must exist is finite, that a rerun
//! reuses the stages, and that the same settings give the same numbers.

use epa::demo::{DemoOptions, Preset, run};
use std::path::Path;

fn args(out: &Path, fresh: bool) -> DemoOptions {
    DemoOptions {
        preset: Preset::Tiny,
        out: out.to_path_buf(),
        set: vec![],
        print_config: false,
        fresh,
        device: epa::device::DeviceOptions { device: crate::common::spec(), dtype: Default::default() },
    }
}

fn finite(v: &serde_json::Value, path: &str) -> f64 {
    let x = v.pointer(path).and_then(|x| x.as_f64()).unwrap_or_else(|| panic!("{path} missing or not a number"));
    assert!(x.is_finite(), "{path} = {x}");
    x
}

#[test]
fn tiny_preset_runs_end_to_end_and_writes_a_complete_report() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    run(&args(&out, false)).unwrap().expect("results");
    for f in [
        "report.md",
        "results.json",
        "config.toml",
        "frontier.png",
        "curves.png",
        "slope1.png",
        "data/train.jsonl",
        "data/held_out.jsonl",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    for png in ["frontier.png", "curves.png", "slope1.png"] {
        let b = std::fs::read(out.join(png)).unwrap();
        assert!(b.starts_with(b"\x89PNG") && b.len() > 5_000, "{png} is not a drawn PNG");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["config"]["preset"], "tiny");
    assert_eq!(r["data"]["prompts_train"], 8.0);
    for m in ["dpo", "epa-strong", "epa-weak", "online-epa"] {
        let pts = r["methods"][m].as_array().unwrap_or_else(|| panic!("method {m} missing"));
        assert_eq!(pts.len(), 2, "{m}: two evaluation points");
        for (i, _) in pts.iter().enumerate() {
            for k in ["gold", "kl", "kl_per_token", "win_rate", "eps_hat"] {
                for part in ["mean", "lo", "hi"] {
                    finite(&r, &format!("/methods/{m}/{i}/stats/{k}/{part}"));
                }
                let s = &r["methods"][m][i]["stats"][k];
                assert!(
                    s["lo"].as_f64() <= s["mean"].as_f64().map(|x| x + 1e-12)
                        && s["mean"].as_f64().map(|x| x - 1e-12) <= s["hi"].as_f64(),
                    "{m} {k}: {s}"
                );
            }
            // The random tiny model never names the topic, so r* can be constant within a prompt and
            // Pearson undefined (null); when defined it is a correlation.
            let p = &r["methods"][m][i]["stats"]["pearson"]["mean"];
            assert!(p.is_null() || p.as_f64().is_some_and(|x| (-1.0..=1.0).contains(&x)), "{p}");
            // ε̂ over the reference's ε̂ (= Var(r*)), on held-out and on the 4 fit prompts; the random
            // tiny model's held-out answers can all score alike (Var(r*) = 0: undefined, null), its
            // fit prompts' do not.
            for (norm, eps) in [("eps_hat_norm", "eps_hat"), ("fit_eps_hat_norm", "fit_eps_hat")] {
                let var_truth = finite(&r, &format!("/reference/stats/{eps}/mean"));
                let got = r["methods"][m][i]["stats"][norm]["mean"].as_f64();
                if var_truth == 0.0 {
                    assert_eq!(got, None, "{m} {norm}");
                    continue;
                }
                let want = finite(&r, &format!("/methods/{m}/{i}/stats/{eps}/mean")) / var_truth;
                let got = got.unwrap_or(f64::NAN);
                assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{m} {norm}: {got} vs {want}");
            }
            finite(&r, &format!("/methods/{m}/{i}/stats/fit_slope/mean"));
        }
    }
    // The reference's learned reward is 0: its slope is 0 and it misses all of Var(r*).
    assert!(finite(&r, "/reference/stats/fit_eps_hat/mean") > 0.0);
    assert_eq!(finite(&r, "/reference/stats/fit_slope/mean"), 0.0);
    assert_eq!(finite(&r, "/reference/stats/fit_eps_hat_norm/mean"), 1.0);
    // The power report: the plan's numbers and one reached standard error per comparison.
    assert_eq!(r["power"]["units"], 4 * 2);
    assert!((finite(&r, "/power/units_needed") - 289.4).abs() < 1.0);
    assert_eq!(r["power"]["reached"].as_array().unwrap().len(), 4);
    let comps = r["comparisons"].as_array().unwrap();
    // Each method against dpo, and the configured online-epa − epa-weak.
    assert_eq!(comps.len(), 4);
    assert_eq!((comps[3]["method"].as_str(), comps[3]["baseline"].as_str()), (Some("online-epa"), Some("epa-weak")));
    // The online run evaluated at the offline runs' global steps, and its rounds sampled as much as
    // the data holds for the training prompts: equal sampling, similar compute.
    let steps = |m: &str| r["methods"][m].as_array().unwrap().iter().map(|p| p["step"].as_u64()).collect::<Vec<_>>();
    assert_eq!(steps("online-epa"), steps("epa-weak"));
    let (on, off) = (finite(&r, "/compute_tokens/online-epa"), finite(&r, "/compute_tokens/epa-weak"));
    assert!(on > 0.0 && (on / off - 1.0).abs() < 0.5, "compute: online {on}, offline {off}");
    for round in 0..2 {
        assert!(out.join(format!("runs/online-epa-s1/round-{round}.jsonl")).exists());
    }
    assert!(out.join("runs/online-epa-s1/round-0/final/config.json").exists(), "round 0 exports the next policy");
    for i in 0..4 {
        finite(&r, &format!("/comparisons/{i}/gold_at_matched_kl/mean"));
        finite(&r, &format!("/comparisons/{i}/eps_hat/mean"));
        finite(&r, &format!("/comparisons/{i}/matched_kl"));
    }
    assert_eq!(r["verdict"].as_array().unwrap().len(), 8);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for s in [
        "## Verdict",
        "| dpo |",
        "| epa-weak |",
        "frontier.png",
        "slope1.png",
        "Command:",
        "## Power",
        "## The fit on 4",
    ] {
        assert!(md.contains(s), "report.md lacks {s:?}");
    }

    // A rerun reuses data and runs (their files are untouched) and gives the same numbers.
    let data_before = std::fs::metadata(out.join("data/train.jsonl")).unwrap().modified().unwrap();
    let first = std::fs::read(out.join("results.json")).unwrap();
    let again = run(&args(&out, false)).unwrap().unwrap();
    assert_eq!(std::fs::metadata(out.join("data/train.jsonl")).unwrap().modified().unwrap(), data_before);
    assert!(first == std::fs::read(out.join("results.json")).unwrap(), "a rerun changed results.json");
    let methods = serde_json::to_string(&again.methods).unwrap();

    // Redone from scratch elsewhere: same data, same numbers.
    let out2 = d.path().join("demo2");
    let fresh = run(&args(&out2, true)).unwrap().unwrap();
    assert_eq!(
        std::fs::read(out.join("data/train.jsonl")).unwrap(),
        std::fs::read(out2.join("data/train.jsonl")).unwrap()
    );
    assert_eq!(serde_json::to_string(&fresh.methods).unwrap(), methods);
}

#[test]
fn bad_settings_give_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // An unknown preset is the command line's error, which lists the valid ones.
    use clap::Parser;
    let e = epa::cli::Cli::try_parse_from(["epa", "demo", "--preset", "huge"]).err().unwrap().to_string();
    assert!(e.contains("invalid value 'huge'") && e.contains("tiny, demo, full"), "{e}");
    let mut a = args(d.path(), false);
    a.set = vec!["methods=[{name=\"x\", loss=\"epa\", strong=5, weak=0}]".into(), "compare=[]".into()];
    let e = run(&a).unwrap_err().to_string();
    assert!(e.contains("5 strong negatives") && e.contains("3 answers"), "{e}");
    let mut a = args(d.path(), false);
    a.set = vec!["data.nonsense=1".into()];
    assert!(format!("{:#}", run(&a).unwrap_err()).contains("nonsense"));
    // Two methods of one name would share a run folder.
    let mut a = args(d.path(), false);
    a.set = vec![
        "methods=[{name=\"x\", loss=\"epa\", strong=1, weak=0}, {name=\"x\", loss=\"dpo\", strong=1, weak=0}]".into(),
        "compare=[]".into(),
    ];
    assert!(run(&a).unwrap_err().to_string().contains("\"x\" is used twice"));
    // A comparison must name methods; online rounds must divide the steps.
    let mut a = args(d.path(), false);
    a.set = vec!["compare=[[\"dpo\", \"nope\"]]".into()];
    assert!(run(&a).unwrap_err().to_string().contains("no method is named \"nope\""));
    let mut a = args(d.path(), false);
    a.set = vec![
        "methods=[{name=\"o\", loss=\"epa\", strong=1, weak=0, online={rounds=3, pairing=\"best_vs_rest\"}}]".into(),
        "compare=[]".into(),
    ];
    let e = format!("{:#}", run(&a).unwrap_err());
    assert!(e.contains("online.rounds (3) must divide train.steps (2)"), "{e}");
}
