//! Tests of the preference losses: identities, values and gradients against an independent f64
//! reference (tests/all/losses/losses_reference.rs), finite differences, stability, masking, golden fixtures,
//! metrics aggregation and configuration errors.

mod losses_reference;

use ::epa::losses::*;
use burn::tensor::{Device, Tensor, TensorData};
use losses_reference::{Case, total_loss};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use Role::{Positive, Strong, Weak};

// ---------------------------------------------------------------- helpers

fn t2(device: &Device, rows: &[Vec<f64>]) -> Tensor<2> {
    let (p, c) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(flat, [p, c]), device)
}

/// The batch of a case on `device`, and the policy leaf (requires grad on autodiff devices).
fn batch_of(case: &Case, device: &Device, grad: bool) -> (ScoreBatch, Tensor<2>) {
    let mut policy = t2(device, &case.policy);
    if grad {
        policy = policy.require_grad();
    }
    let mask: Vec<Vec<f64>> = case.mask.iter().map(|r| r.iter().map(|&m| f64::from(u8::from(m))).collect()).collect();
    let batch = ScoreBatch {
        policy_logps: policy.clone(),
        ref_logps: Some(t2(device, &case.reference)),
        lengths: t2(device, &case.lengths),
        mask: t2(device, &mask),
        roles: case.roles.clone(),
        true_scores: Some(t2(device, &case.truth)),
    };
    (batch, policy)
}

fn host(t: Tensor<2>) -> Vec<Vec<f64>> {
    let c = t.dims()[1];
    let v: Vec<f32> = t.into_data().try_into_vec_as::<f32>().unwrap();
    v.chunks(c).map(|r| r.iter().map(|&x| f64::from(x)).collect()).collect()
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_data().try_into_vec_as::<f32>().unwrap()[0])
}

/// Loss value on a plain device; loss and d loss / d policy on an autodiff device.
fn loss_and_grad(cfg: &LossConfig, case: &Case) -> (f64, Vec<Vec<f64>>) {
    let (batch, _) = batch_of(case, &crate::common::device(), false);
    let plain = scalar(cfg.compute(&batch).unwrap().loss);
    let (batch, policy) = batch_of(case, &crate::common::device().autodiff(), true);
    let out = cfg.compute(&batch).unwrap();
    let value = scalar(out.loss.clone());
    assert!((plain - value).abs() <= 1e-6 * (1.0 + value.abs()), "plain {plain} vs autodiff {value}");
    let grads = out.loss.backward();
    (value, host(policy.grad(&grads).expect("policy has a gradient")))
}

fn cfg(terms: Vec<LossTerm>) -> LossConfig {
    LossConfig { terms, metrics_beta: None }
}

fn assert_close(what: &str, a: f64, b: f64, tol: f64) {
    assert!(a.is_finite() && b.is_finite(), "{what}: non-finite {a} vs {b}");
    assert!((a - b).abs() <= tol * (1.0 + a.abs().max(b.abs())), "{what}: {a} vs {b} (tol {tol})");
}

fn assert_grads_close(what: &str, a: &[Vec<f64>], b: &[Vec<f64>], tol: f64) {
    let scale = a.iter().flatten().chain(b.iter().flatten()).fold(1.0f64, |m, x| m.max(x.abs()));
    for (p, (ra, rb)) in a.iter().zip(b).enumerate() {
        for (j, (x, y)) in ra.iter().zip(rb).enumerate() {
            assert!(x.is_finite() && y.is_finite(), "{what}: grad[{p}][{j}] non-finite {x} vs {y}");
            assert!((x - y).abs() <= tol * scale, "{what}: grad[{p}][{j}] {x} vs {y}");
        }
    }
}

fn roles6() -> Vec<Role> {
    vec![Positive, Strong, Strong, Strong, Weak, Weak]
}

/// Random ragged case: P prompts over `roles`; some slots masked, prompt 1 without negatives,
/// prompt 2 with a masked positive (when P ≥ 4); masked slots hold garbage.
fn random_case(seed: u64, p: usize, roles: Vec<Role>, scale: f64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let c = roles.len();
    let mut uni = |lo: f64, hi: f64| rng.random_range(lo..hi);
    let mut case = Case {
        roles,
        policy: vec![vec![0.0; c]; p],
        reference: vec![vec![0.0; c]; p],
        lengths: vec![vec![0.0; c]; p],
        mask: vec![vec![true; c]; p],
        truth: vec![vec![0.0; c]; p],
    };
    for i in 0..p {
        for j in 0..c {
            let base = uni(-3.0, -0.2) * scale;
            case.policy[i][j] = base + uni(-1.0, 1.0) * scale * 0.3;
            case.reference[i][j] = base + uni(-1.0, 1.0) * scale * 0.3;
            case.lengths[i][j] = uni(1.0, 40.0).round();
            case.truth[i][j] = uni(0.0, 10.0);
            case.mask[i][j] = j == 0 || uni(0.0, 1.0) > 0.3;
        }
    }
    if p >= 4 {
        for j in 1..c {
            case.mask[1][j] = false;
        }
        case.mask[2][0] = false;
    }
    // Make sure some prompt has every slot real.
    case.mask[0] = vec![true; c];
    // Garbage in padded slots must not matter.
    for i in 0..p {
        for j in 0..c {
            if !case.mask[i][j] {
                case.policy[i][j] = 1e30;
                case.reference[i][j] = -1e30;
            }
        }
    }
    case
}

/// One configuration of every loss, with non-default hyper-parameters where they matter.
fn every_loss() -> Vec<LossTerm> {
    vec![
        LossTerm::Epa(EpaParams::default()),
        LossTerm::Epa(EpaParams { beta: 0.5, w: 2.5, lambda_strong: 0.7, lambda_weak: 0.3, ..Default::default() }),
        LossTerm::Epa(EpaParams { use_weak: false, ..Default::default() }),
        LossTerm::Epa(EpaParams { use_strong: false, beta: 0.3, ..Default::default() }),
        LossTerm::Epa(EpaParams { max_strong: Some(2), max_weak: Some(1), ..Default::default() }),
        LossTerm::Dpo(DpoParams::default()),
        LossTerm::Dpo(DpoParams { label_smoothing: 0.2, beta: 0.4, use_weak: true, ..Default::default() }),
        LossTerm::Robust(RobustParams(DpoParams { label_smoothing: 0.2, ..Default::default() })),
        LossTerm::Ipo(IpoParams::default()),
        LossTerm::Ipo(IpoParams { length_normalize: false, beta: 0.5, ..Default::default() }),
        LossTerm::Hinge(HingeParams { beta: 0.7, ..Default::default() }),
        LossTerm::Simpo(SimpoParams::default()),
        LossTerm::Simpo(SimpoParams { label_smoothing: 0.1, gamma: 1.0, use_weak: true, ..Default::default() }),
        LossTerm::NcaPair(NcaPairParams { beta: 0.5, ..Default::default() }),
        LossTerm::Nca(NcaParams(InfoNcaParams { alpha: 2.0, ..Default::default() })),
        LossTerm::Nca(NcaParams(InfoNcaParams { labels: Labels::OneHot, include_weak: true, ..Default::default() })),
        LossTerm::Infonca(InfoNcaParams { alpha: 0.5, beta: 0.3, ..Default::default() }),
        LossTerm::Infonca(InfoNcaParams { include_weak: true, ..Default::default() }),
        LossTerm::PlackettLuce(PlackettLuceParams { beta: 0.4, ..Default::default() }),
        LossTerm::PlackettLuce(PlackettLuceParams { include_weak: true, ..Default::default() }),
        LossTerm::Sft(SftParams::default()),
        LossTerm::Sft(SftParams { length_normalize: false, ..Default::default() }),
    ]
}

// ---------------------------------------------------------------- values and gradients

#[test]
fn every_loss_matches_the_f64_reference_in_value_and_gradient() {
    for seed in 0..3 {
        let case = random_case(seed, 6, roles6(), 10.0);
        for term in every_loss() {
            let what = format!("seed {seed} {term:?}");
            let (value, grad) = loss_and_grad(&cfg(vec![term.clone()]), &case);
            let reference = total_loss(&case, std::slice::from_ref(&term));
            assert_close(&what, value, reference.v, 2e-5);
            let ref_grad: Vec<Vec<f64>> = reference.g.chunks(case.c()).map(<[f64]>::to_vec).collect();
            assert_grads_close(&what, &grad, &ref_grad, 2e-5);
            // Padded slots get exactly no gradient.
            for (i, row) in grad.iter().enumerate() {
                for (j, g) in row.iter().enumerate() {
                    if !case.mask[i][j] {
                        assert_eq!(*g, 0.0, "{what}: padded slot [{i}][{j}] has gradient {g}");
                    }
                }
            }
        }
    }
}

#[test]
fn weighted_sum_of_terms_matches_reference() {
    let case = random_case(7, 6, roles6(), 10.0);
    let terms = vec![
        LossTerm::Epa(EpaParams { weight: 1.0, ..Default::default() }),
        LossTerm::Dpo(DpoParams { weight: 0.5, ..Default::default() }),
        LossTerm::Sft(SftParams { weight: 0.05, ..Default::default() }),
    ];
    let (value, grad) = loss_and_grad(&cfg(terms.clone()), &case);
    let reference = total_loss(&case, &terms);
    assert_close("weighted sum", value, reference.v, 2e-5);
    let ref_grad: Vec<Vec<f64>> = reference.g.chunks(case.c()).map(<[f64]>::to_vec).collect();
    assert_grads_close("weighted sum", &grad, &ref_grad, 2e-5);
}

#[test]
#[allow(clippy::needless_range_loop)]
fn gradients_match_finite_differences() {
    let case = random_case(11, 4, roles6(), 3.0);
    let h = 1e-2;
    let terms = [
        LossTerm::Epa(EpaParams { beta: 0.5, ..Default::default() }),
        LossTerm::Dpo(DpoParams { beta: 0.5, label_smoothing: 0.1, ..Default::default() }),
        LossTerm::Ipo(IpoParams::default()),
        LossTerm::Nca(NcaParams::default()),
        LossTerm::PlackettLuce(PlackettLuceParams { beta: 0.5, ..Default::default() }),
        LossTerm::Simpo(SimpoParams::default()),
    ];
    for term in terms {
        let config = cfg(vec![term.clone()]);
        let (_, grad) = loss_and_grad(&config, &case);
        let f = |c: &Case| {
            let (b, _) = batch_of(c, &crate::common::device(), false);
            scalar(config.compute(&b).unwrap().loss)
        };
        for i in 0..case.p() {
            for j in 0..case.c() {
                if !case.mask[i][j] {
                    continue;
                }
                let (mut up, mut down) = (case.clone(), case.clone());
                up.policy[i][j] += h;
                down.policy[i][j] -= h;
                let fd = (f(&up) - f(&down)) / (2.0 * h);
                assert!((fd - grad[i][j]).abs() < 2e-3, "{term:?} [{i}][{j}]: fd {fd} vs autodiff {}", grad[i][j]);
            }
        }
    }
}

// ---------------------------------------------------------------- identities

fn value(term: LossTerm, case: &Case) -> (f64, Vec<Vec<f64>>) {
    loss_and_grad(&cfg(vec![term]), case)
}

fn assert_same(what: &str, a: (f64, Vec<Vec<f64>>), b: (f64, Vec<Vec<f64>>)) {
    assert_close(what, a.0, b.0, 1e-5);
    assert_grads_close(what, &a.1, &b.1, 1e-5);
}

#[test]
fn epa_with_one_strong_no_weak_and_w1_is_dpo() {
    for seed in 0..4 {
        let case = random_case(100 + seed, 8, vec![Positive, Strong], 20.0);
        let beta = 0.05 + 0.2 * seed as f64;
        assert_same(
            "epa = dpo",
            value(LossTerm::Epa(EpaParams { beta, ..Default::default() }), &case),
            value(LossTerm::Dpo(DpoParams { beta, ..Default::default() }), &case),
        );
    }
}

#[test]
fn epa_with_w1_is_cross_entropy_with_the_positive_at_index_0() {
    let case = random_case(200, 5, roles6(), 10.0);
    // Every slot real (padded garbage replaced by ordinary scores).
    let mut full = case.clone();
    full.mask = vec![vec![true; 6]; 5];
    for (pol, refp) in full.policy.iter_mut().flatten().zip(full.reference.iter_mut().flatten()) {
        if pol.abs() > 1e20 {
            (*pol, *refp) = (-5.0, -4.0);
        }
    }
    let beta = 0.3;
    let (epa, _) = value(LossTerm::Epa(EpaParams { beta, ..Default::default() }), &full);
    // Cross-entropy with burn's own log_softmax over the rewards, target class 0.
    let device = crate::common::device();
    let r = (t2(&device, &full.policy) - t2(&device, &full.reference)).mul_scalar(beta);
    let ce = -scalar(burn::tensor::activation::log_softmax(r, 1).narrow(1, 0, 1).mean().reshape([1]));
    assert_close("epa = CE", epa, ce, 1e-5);
}

#[test]
fn plackett_luce_with_two_candidates_is_dpo() {
    for seed in 0..3 {
        let mut case = random_case(300 + seed, 8, vec![Positive, Strong], 20.0);
        for i in 0..case.p() {
            case.truth[i] = vec![5.0, 1.0 + i as f64 * 0.1];
        }
        assert_same(
            "pl = dpo",
            value(LossTerm::PlackettLuce(PlackettLuceParams { beta: 0.2, ..Default::default() }), &case),
            value(LossTerm::Dpo(DpoParams { beta: 0.2, ..Default::default() }), &case),
        );
    }
}

#[test]
fn infonca_with_one_hot_labels_is_epa_strong_only() {
    let mut case = random_case(400, 6, roles6(), 10.0);
    let strong_only = LossTerm::Epa(EpaParams { use_weak: false, beta: 0.2, ..Default::default() });
    let one_hot = LossTerm::Infonca(InfoNcaParams { labels: Labels::OneHot, beta: 0.2, ..Default::default() });
    assert_same("infonca one-hot = epa strong-only", value(one_hot, &case), value(strong_only.clone(), &case));
    // Soft labels with an overwhelming gap in the true scores are one-hot too.
    for row in &mut case.truth {
        row[0] = 1e4;
    }
    let soft = LossTerm::Infonca(InfoNcaParams { beta: 0.2, ..Default::default() });
    assert_same("infonca soft(one-hot) = epa strong-only", value(soft, &case), value(strong_only, &case));
}

#[test]
fn nca_k2_with_one_hot_labels_is_nca_pair() {
    let case = random_case(450, 7, vec![Positive, Strong], 10.0);
    assert_same(
        "nca(K=2, one-hot) = nca_pair",
        value(
            LossTerm::Nca(NcaParams(InfoNcaParams { labels: Labels::OneHot, beta: 0.3, ..Default::default() })),
            &case,
        ),
        value(LossTerm::NcaPair(NcaPairParams { beta: 0.3, ..Default::default() }), &case),
    );
}

#[test]
fn masking_a_slot_equals_removing_it() {
    // One prompt; slot 2 masked (with garbage, even NaN) vs the same prompt without column 2.
    let base = random_case(500, 1, roles6(), 10.0);
    let mut masked = base.clone();
    masked.mask[0][2] = false;
    masked.policy[0][2] = f64::NAN;
    masked.reference[0][2] = f64::INFINITY;
    masked.truth[0][2] = f64::NAN;
    let keep: Vec<usize> = (0..6).filter(|&j| j != 2).collect();
    let pick = |rows: &Vec<Vec<f64>>| vec![keep.iter().map(|&j| rows[0][j]).collect::<Vec<_>>()];
    let removed = Case {
        roles: keep.iter().map(|&j| base.roles[j]).collect(),
        policy: pick(&base.policy),
        reference: pick(&base.reference),
        lengths: pick(&base.lengths),
        mask: vec![vec![true; 5]],
        truth: pick(&base.truth),
    };
    for term in every_loss() {
        let (va, ga) = value(term.clone(), &masked);
        let (vb, gb) = value(term.clone(), &removed);
        assert_close(&format!("{term:?}"), va, vb, 1e-6);
        assert_eq!(ga[0][2], 0.0);
        let ga_kept = vec![keep.iter().map(|&j| ga[0][j]).collect::<Vec<_>>()];
        assert_grads_close(&format!("{term:?}"), &ga_kept, &gb, 1e-6);
    }
}

// ---------------------------------------------------------------- stability and skipping

#[test]
fn inputs_of_1e4_give_finite_losses_and_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(600);
    let mut case = random_case(600, 6, roles6(), 1.0);
    for i in 0..6 {
        for j in 0..6 {
            let sign = |r: &mut ChaCha8Rng| if r.random_bool(0.5) { 1e4 } else { -1e4 };
            case.policy[i][j] = sign(&mut rng);
            case.reference[i][j] = sign(&mut rng);
            case.truth[i][j] = sign(&mut rng);
        }
    }
    for beta_scale in [1.0, 10.0] {
        for term in every_loss() {
            let term = with_beta(term, beta_scale);
            let (v, g) = value(term.clone(), &case);
            assert!(v.is_finite(), "{term:?}: loss {v}");
            assert!(g.iter().flatten().all(|x| x.is_finite()), "{term:?}: gradient {g:?}");
        }
    }
}

fn with_beta(term: LossTerm, k: f64) -> LossTerm {
    let mut t = term;
    match &mut t {
        LossTerm::Epa(p) => p.beta *= k,
        LossTerm::Dpo(p) | LossTerm::Robust(RobustParams(p)) => p.beta *= k,
        LossTerm::Ipo(p) => p.beta *= k,
        LossTerm::Hinge(p) => p.beta *= k,
        LossTerm::Simpo(p) => p.beta *= k,
        LossTerm::NcaPair(p) => p.beta *= k,
        LossTerm::Nca(NcaParams(p)) | LossTerm::Infonca(p) => p.beta *= k,
        LossTerm::PlackettLuce(p) => p.beta *= k,
        LossTerm::Sft(_) => {}
    }
    t
}

#[test]
fn fully_masked_prompt_is_skipped_not_nan() {
    let case = random_case(700, 4, roles6(), 10.0);
    let mut with_dead = case.clone();
    with_dead.policy.push(vec![f64::NAN; 6]);
    with_dead.reference.push(vec![f64::NAN; 6]);
    with_dead.lengths.push(vec![0.0; 6]);
    with_dead.mask.push(vec![false; 6]);
    with_dead.truth.push(vec![f64::NAN; 6]);
    for term in every_loss() {
        let (va, ga) = value(term.clone(), &case);
        let (vb, gb) = value(term.clone(), &with_dead);
        assert_close(&format!("{term:?}"), va, vb, 1e-6);
        assert!(gb[4].iter().all(|&g| g == 0.0));
        assert_grads_close(&format!("{term:?}"), &ga, &gb[..4], 1e-6);
    }
}

#[test]
fn a_batch_with_nothing_usable_gives_a_zero_loss() {
    let mut case = random_case(800, 3, roles6(), 10.0);
    case.mask = vec![vec![false; 6]; 3];
    case.mask[1][0] = true; // a positive without negatives
    let config = cfg(vec![LossTerm::Epa(EpaParams::default()), LossTerm::Dpo(DpoParams::default())]);
    let (v, g) = loss_and_grad(&config, &case);
    assert_eq!(v, 0.0);
    assert!(g.iter().flatten().all(|&x| x == 0.0));
    let (batch, _) = batch_of(&case, &crate::common::device(), false);
    let m = config.compute(&batch).unwrap().metrics;
    assert_eq!(m.mean()["prompts/skipped"], 1.0);
    assert_eq!(m.mean()["loss"], 0.0);
    assert_eq!(m.get("loss/epa").unwrap().count, 0.0);
}

// ---------------------------------------------------------------- golden fixtures

#[test]
fn golden_dpo_and_epa_losses_are_reproduced() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let path = format!("{}/tests/fixtures/{model}/golden.json", env!("CARGO_MANIFEST_DIR"));
        let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let seqs = g["sequences"].as_array().unwrap();
        let groups = g["groups"].as_array().unwrap();
        let beta = g["beta"].as_f64().unwrap();
        let w = g["epa_w"].as_f64().unwrap();
        let idx = |v: &serde_json::Value| -> Vec<usize> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
        };
        let max_s = groups.iter().map(|gr| idx(&gr["strong"]).len()).max().unwrap();
        let max_w = groups.iter().map(|gr| idx(&gr["weak"]).len()).max().unwrap();
        let mut roles = vec![Positive];
        roles.extend(std::iter::repeat_n(Strong, max_s));
        roles.extend(std::iter::repeat_n(Weak, max_w));
        let c = roles.len();
        let mut case = Case { roles, policy: vec![], reference: vec![], lengths: vec![], mask: vec![], truth: vec![] };
        for gr in groups {
            let (s, wk) = (idx(&gr["strong"]), idx(&gr["weak"]));
            let mut cols: Vec<Option<usize>> = vec![Some(gr["positive"].as_u64().unwrap() as usize)];
            cols.extend((0..max_s).map(|k| s.get(k).copied()));
            cols.extend((0..max_w).map(|k| wk.get(k).copied()));
            let get = |k: Option<usize>, key: &str| k.map_or(0.0, |k| seqs[k][key].as_f64().unwrap());
            case.policy.push(cols.iter().map(|&k| get(k, "completion_logp_sum")).collect());
            case.reference.push(cols.iter().map(|&k| get(k, "ref_completion_logp_sum")).collect());
            case.lengths.push(vec![1.0; c]);
            case.mask.push(cols.iter().map(Option::is_some).collect());
            case.truth.push(vec![0.0; c]);
        }
        let (batch, _) = batch_of(&case, &crate::common::device(), false);
        let dpo = LossTerm::Dpo(DpoParams { beta, ..Default::default() });
        let epa = LossTerm::Epa(EpaParams { beta, w, ..Default::default() });
        for (term, key) in [(dpo, "dpo"), (epa, "epa")] {
            let got = scalar(cfg(vec![term.clone()]).compute(&batch).unwrap().loss);
            let want = g[format!("{key}_loss")].as_f64().unwrap();
            println!("{model} {key}_loss: ours {got:.7} golden {want:.7} |diff| {:.2e}", (got - want).abs());
            assert!((got - want).abs() < 1e-5, "{model} {key}_loss: {got} vs golden {want}");
            let per = host(term.per_prompt(&batch).unwrap().values.reshape([case.p(), 1]));
            for (k, want) in g[format!("{key}_terms")].as_array().unwrap().iter().enumerate() {
                let want = want.as_f64().unwrap();
                assert!((per[k][0] - want).abs() < 1e-5, "{model} {key}_terms[{k}]: {} vs {want}", per[k][0]);
            }
        }
    }
}

// ---------------------------------------------------------------- metrics

fn sub_case(case: &Case, rows: std::ops::Range<usize>) -> Case {
    Case {
        roles: case.roles.clone(),
        policy: case.policy[rows.clone()].to_vec(),
        reference: case.reference[rows.clone()].to_vec(),
        lengths: case.lengths[rows.clone()].to_vec(),
        mask: case.mask[rows.clone()].to_vec(),
        truth: case.truth[rows].to_vec(),
    }
}

#[test]
fn merged_micro_batch_metrics_equal_whole_batch_metrics() {
    let case = random_case(900, 7, roles6(), 10.0);
    let config = cfg(vec![
        LossTerm::Epa(EpaParams::default()),
        LossTerm::Dpo(DpoParams { weight: 0.5, ..Default::default() }),
        LossTerm::Sft(SftParams { weight: 0.1, ..Default::default() }),
    ]);
    let metrics = |c: &Case| {
        let (b, _) = batch_of(c, &crate::common::device(), false);
        config.compute(&b).unwrap()
    };
    let whole = metrics(&case);
    let whole_loss = scalar(whole.loss);
    let mut merged = metrics(&sub_case(&case, 0..3)).metrics;
    merged.merge(&metrics(&sub_case(&case, 3..7)).metrics);
    let (a, b) = (whole.metrics.mean(), merged.mean());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_close(k, *v, b[k], 1e-6);
    }
    assert_close("loss metric = loss", a["loss"], whole_loss, 1e-6);
    for key in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/weak",
        "rewards/margins",
        "rewards/accuracies",
        "rewards/accuracies_all",
        "logps/chosen",
        "logps/rejected",
        "logps/weak",
        "slope1/pearson",
        "slope1/eps",
        "prompts/skipped",
        "loss/epa",
        "loss/dpo",
        "loss/sft",
    ] {
        assert!(a.contains_key(key), "missing metric {key}");
    }
}

#[test]
fn metrics_values_on_a_hand_made_batch() {
    // One prompt: positive, two strong, one weak; β = 1, reference 0 → r = policy.
    let case = Case {
        roles: vec![Positive, Strong, Strong, Weak],
        policy: vec![vec![2.0, 1.0, -1.0, 3.0]],
        reference: vec![vec![0.0; 4]],
        lengths: vec![vec![1.0; 4]],
        mask: vec![vec![true; 4]],
        truth: vec![vec![3.0, 1.0, 2.0, 0.0]],
    };
    let config = cfg(vec![LossTerm::Epa(EpaParams { beta: 1.0, ..Default::default() })]);
    let (b, _) = batch_of(&case, &crate::common::device(), false);
    let m = config.compute(&b).unwrap().metrics.mean();
    assert_close("chosen", m["rewards/chosen"], 2.0, 1e-9);
    assert_close("rejected", m["rewards/rejected"], 0.0, 1e-9);
    assert_close("weak", m["rewards/weak"], 3.0, 1e-9);
    assert_close("margins", m["rewards/margins"], 2.0, 1e-9);
    assert_close("accuracies", m["rewards/accuracies"], 1.0, 1e-9);
    assert_close("accuracies_all", m["rewards/accuracies_all"], 0.0, 1e-9);
    // r = (2, 1, −1), r* = (3, 1, 2): Pearson = cov / (σ_r σ_r*).
    let (r, t) = ([2.0, 1.0, -1.0], [3.0, 1.0, 2.0]);
    let mean = |v: &[f64; 3]| v.iter().sum::<f64>() / 3.0;
    let (mr, mt) = (mean(&r), mean(&t));
    let cov: f64 = (0..3).map(|k| (r[k] - mr) * (t[k] - mt)).sum();
    let vr: f64 = (0..3).map(|k| (r[k] - mr).powi(2)).sum();
    let vt: f64 = (0..3).map(|k| (t[k] - mt).powi(2)).sum();
    assert_close("pearson", m["slope1/pearson"], cov / (vr * vt).sqrt(), 1e-6);
    // r − r* = (−1, 0, −3): population variance 14/9.
    assert_close("eps", m["slope1/eps"], 14.0 / 9.0, 1e-6);
    // EPA loss = log(1 + e^{−1} + e^{−3} + e^{1}).
    let want = (1.0 + (-1.0f64).exp() + (-3.0f64).exp() + 1.0f64.exp()).ln();
    assert_close("loss", m["loss"], want, 1e-6);
}

// ---------------------------------------------------------------- configuration

#[test]
fn every_loss_is_selectable_by_name_from_toml() {
    let text = r#"
        metrics_beta = 0.2
        [[terms]]
        name = "epa"
        beta = 0.2
        w = 2.0
        lambda_strong = 1.0
        lambda_weak = 0.5
        use_strong = true
        use_weak = false
        max_strong = 2
        [[terms]]
        name = "dpo"
        label_smoothing = 0.1
        [[terms]]
        name = "cdpo"
        label_smoothing = 0.2
        [[terms]]
        name = "sigmoid"
        [[terms]]
        name = "robust"
        label_smoothing = 0.3
        [[terms]]
        name = "ipo"
        length_normalize = false
        [[terms]]
        name = "hinge"
        [[terms]]
        name = "simpo"
        beta = 2.5
        gamma = 1.2
        [[terms]]
        name = "nca_pair"
        [[terms]]
        name = "nca"
        labels = "one_hot"
        [[terms]]
        name = "infonca"
        alpha = 0.5
        [[terms]]
        name = "plackett_luce"
        include_weak = true
        [[terms]]
        name = "sft"
        weight = 0.05
    "#;
    let c = LossConfig::from_toml_str(text).unwrap();
    let names: Vec<&str> = c.terms.iter().map(LossTerm::name).collect();
    assert_eq!(
        names,
        [
            "epa",
            "dpo",
            "dpo",
            "dpo",
            "robust",
            "ipo",
            "hinge",
            "simpo",
            "nca_pair",
            "nca",
            "infonca",
            "plackett_luce",
            "sft"
        ]
    );
    assert_eq!(
        c.terms[0],
        LossTerm::Epa(EpaParams {
            beta: 0.2,
            w: 2.0,
            lambda_weak: 0.5,
            use_weak: false,
            max_strong: Some(2),
            ..Default::default()
        })
    );
    assert_eq!(c.terms[2], LossTerm::Dpo(DpoParams { label_smoothing: 0.2, ..Default::default() }));
    assert_eq!(c.labels()[2], "dpo#2");
    // Round trip through TOML.
    let again = LossConfig::from_toml_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
    // It computes on a batch with everything.
    let case = random_case(1000, 5, roles6(), 10.0);
    let (b, _) = batch_of(&case, &crate::common::device(), false);
    let out = c.compute(&b).unwrap();
    assert!(scalar(out.loss).is_finite());
    // TRL style.
    let trl = LossConfig::from_names(&["sigmoid", "sft"], Some(&[1.0, 0.1])).unwrap();
    assert_eq!(trl.terms[1], LossTerm::Sft(SftParams { weight: 0.1, ..Default::default() }));
    // What the trainer and the data loader must provide.
    assert!(c.needs_reference() && c.needs_true_scores() && c.uses_weak());
    let simple = LossConfig::from_names(&["simpo", "sft"], None).unwrap();
    assert!(!simple.needs_reference() && !simple.needs_true_scores() && !simple.uses_weak());
    let dpo = LossConfig::from_names(&["dpo"], None).unwrap();
    assert!(dpo.needs_reference() && !dpo.uses_weak());
    assert!(LossConfig::default().uses_weak());
    assert_eq!(LossConfig::default().terms, vec![LossTerm::Epa(EpaParams::default())]);
}

fn config_error(text: &str) -> String {
    format!("{:#}", LossConfig::from_toml_str(text).unwrap_err())
}

#[test]
fn invalid_configurations_are_clear_errors() {
    let cases = [
        ("[[terms]]\nname = \"dpoo\"", "unknown variant `dpoo`"),
        ("[[terms]]\nname = \"dpo\"\nbeta = 0.0", "beta must be finite and > 0"),
        ("[[terms]]\nname = \"epa\"\nbeta = -1.0", "beta must be finite and > 0"),
        ("[[terms]]\nname = \"dpo\"\nlabel_smoothing = 0.5", "label_smoothing must be in [0, 0.5)"),
        ("[[terms]]\nname = \"robust\"\nlabel_smoothing = -0.1", "label_smoothing must be in [0, 0.5)"),
        ("[[terms]]\nname = \"epa\"\nw = 0.0", "w must be finite and > 0"),
        ("[[terms]]\nname = \"epa\"\nlambda_weak = 0.0", "lambda_weak must be finite and > 0"),
        ("[[terms]]\nname = \"epa\"\nuse_strong = false\nuse_weak = false", "no negatives left"),
        ("[[terms]]\nname = \"sft\"\nweight = -1.0", "weight must be finite and ≥ 0"),
        ("[[terms]]\nname = \"infonca\"\nalpha = 0.0", "alpha must be finite and > 0"),
        ("[[terms]]\nname = \"epa\"\nbeat = 0.1", "unknown field `beat`"),
        ("terms = []", "no terms"),
        ("[[terms]]\nbeta = 0.1", "missing field `name`"),
    ];
    for (text, want) in cases {
        let err = config_error(text);
        assert!(err.contains(want), "config {text:?}: error {err:?} should contain {want:?}");
    }
    // The failing term is named.
    let err = config_error("[[terms]]\nname = \"epa\"\n[[terms]]\nname = \"dpo\"\nbeta = -2.0");
    assert!(err.contains("loss term #2 ('dpo')"), "{err}");
    // Type errors name the term, its header line and what is wrong.
    let err = config_error("[[terms]]\nname = \"epa\"\n[[terms]]\nname = \"dpo\"\nbeta = \"x\"");
    let want = "loss term #2 (name = 'dpo', [[terms]] at line 3)";
    assert!(err.contains(want) && err.contains("expected f64"), "{err}");
    // Syntax errors carry toml's line and column.
    let err = config_error("[[terms]]\nname = \"epa\"\nbeta = = 1");
    assert!(err.contains("line 3"), "{err}");
    assert!(
        LossConfig::from_names(&["epa", "nope"], None).unwrap_err().to_string().contains("unknown loss name 'nope'")
    );
    let empty = LossConfig { terms: vec![], metrics_beta: None };
    assert!(empty.validate().is_err());
}

#[test]
fn unmet_needs_are_clear_errors_at_compute_time() {
    let device = crate::common::device();
    let case = random_case(1100, 3, roles6(), 10.0);
    let (mut batch, _) = batch_of(&case, &device, false);
    batch.ref_logps = None;
    batch.true_scores = None;
    let err = |term: LossTerm, b: &ScoreBatch| format!("{:#}", cfg(vec![term]).compute(b).unwrap_err());
    assert!(err(LossTerm::Dpo(DpoParams::default()), &batch).contains("needs reference log-probs"));
    assert!(err(LossTerm::Epa(EpaParams::default()), &batch).contains("needs reference log-probs"));
    let (mut with_ref, _) = batch_of(&case, &device, false);
    with_ref.true_scores = None;
    assert!(err(LossTerm::PlackettLuce(PlackettLuceParams::default()), &with_ref).contains("needs true scores"));
    assert!(err(LossTerm::Infonca(InfoNcaParams::default()), &with_ref).contains("needs true scores"));
    // Reference-free losses are fine without ref_logps.
    assert!(
        cfg(vec![LossTerm::Simpo(SimpoParams::default()), LossTerm::Sft(SftParams::default())]).compute(&batch).is_ok()
    );
    // No negatives of the needed kind at all.
    let weak_only = random_case(1200, 3, vec![Positive, Weak, Weak], 10.0);
    let (b, _) = batch_of(&weak_only, &device, false);
    assert!(err(LossTerm::Dpo(DpoParams::default()), &b).contains("needs at least one [Strong] candidate column"));
    let strong_only = LossTerm::Epa(EpaParams { use_weak: false, ..Default::default() });
    assert!(err(strong_only, &b).contains("candidate column"));
    assert!(cfg(vec![LossTerm::Epa(EpaParams::default())]).compute(&b).is_ok());
    let lonely = random_case(1300, 2, vec![Positive], 10.0);
    let (b, _) = batch_of(&lonely, &device, false);
    assert!(err(LossTerm::Epa(EpaParams::default()), &b).contains("candidate column"));
    // Malformed batches.
    let (mut bad, _) = batch_of(&case, &device, false);
    bad.roles = vec![Strong, Positive, Strong, Strong, Weak, Weak];
    assert!(err(LossTerm::Epa(EpaParams::default()), &bad).contains("column 0 must be the Positive"));
    bad.roles.pop();
    assert!(err(LossTerm::Epa(EpaParams::default()), &bad).contains("5 roles for 6 candidate columns"));
}
