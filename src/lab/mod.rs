//! Theory lab: Bradley-Terry's many minimisers vs the energy-based model's one, measured.
//!
//! `epa lab bandit` builds a tabular world (N prompts × M responses, π_ref, a true reward r*),
//! samples UltraFeedback-style preference data from Plackett-Luce / Bradley-Terry on r*, trains
//! a free-logit policy with every method through the project's loss contract, and measures the
//! slope-1 diagnostics on ALL responses, including the never-compared ones.
//!
//! ```no_run
//! let opts = epa::lab::BanditOptions { n_prompts: 10, out: "/tmp/lab".into(), ..Default::default() };
//! let results = epa::lab::run_bandit(&opts).unwrap();
//! println!("{}", results.methods[0].label);
//! ```
//!
//! Outputs in `--out`: `results.json` (every number of the report), `report.md`,
//! `scatter.png` (learned vs true reward, slope-1 line), `weak_sweep.png` (ε̂ vs weak negatives).
//!
//! What it shows (default world, seed 0; see `tests/lab.rs` for the same on small worlds):
//! - DPO (and IPO, Plackett-Luce, InfoNCA) reach the same final loss from every init (DPO: range
//!   3.6e-7) and the same rewards on compared responses, but never move a never-compared logit, so
//!   ε̂ over ALL responses, KL and `E_π[r*]` differ by init: many minimisers, as the paper says.
//! - EPA with weak negatives gives one *policy* from every init (`E_π[r*]` sd 6e-4 vs DPO's 1.1e-2)
//!   by taking the mass off never-compared responses. But a tabular world has no finite EPA
//!   minimiser: weak negatives are never positives, so their learned reward falls without bound
//!   (the loss keeps falling); under Adam every such logit of a prompt moves by the same amount,
//!   keeping the init's offsets. ε̂ over all responses is therefore larger than DPO's, grows with
//!   training, and still depends on the init — the slope-1 claim does not hold here.

pub mod adapter;
pub mod data;
pub mod loss_api;
pub mod methods;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod train;
pub mod world;

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use adapter::{Hyper, IndexBatch, loss_config, needs_scores};
use methods::{Method, MethodKind, layout};
use metrics::{PolicyMetrics, evaluate};
use train::{FitSettings, init_logits, train};
use world::{RefPolicy, World};

/// Options of `epa lab bandit` (the command line's `BanditArgs` converts into it; its defaults,
/// [`BanditOptions::default`], run in well under a minute on 2 cores, release build).
#[derive(Clone, Debug, Serialize)]
pub struct BanditOptions {
    /// Seed of every random draw (world, data, weak negatives, inits). Same seed → same bytes.
    pub seed: u64,
    /// Number of prompts N.
    pub n_prompts: usize,
    /// Number of responses M (one response space shared by all prompts).
    pub n_responses: usize,
    /// Reference policy.
    pub ref_policy: RefPolicy,
    /// Spread of the random reference policy's logits.
    pub ref_sd: f64,
    /// r*(x,y) ~ N(0, reward_sd²).
    pub reward_sd: f64,
    /// Responses per prompt the annotators ever compare (drawn from π_ref); 0 = all M.
    pub pool: usize,
    /// Annotated comparisons (rounds) per prompt.
    pub rounds: usize,
    /// Candidates ranked per round (4 like UltraFeedback; 2 = pairs).
    pub k: usize,
    /// Weak negatives of `epa_weak` (EPA weak-only).
    pub weak: usize,
    /// Numbers of weak negatives swept for EPA strong+weak.
    pub weak_sweep: Vec<usize>,
    /// Methods to train (default all): dpo, ipo, plackett_luce, infonca, epa_strong, epa_weak, epa
    /// (EPA strong+weak, once per --weak-sweep value).
    pub methods: Vec<MethodKind>,
    /// Random initialisations per method.
    pub inits: usize,
    /// Initial logits = log π_ref + init_sd · N(0, 1).
    pub init_sd: f64,
    /// β of every method (IPO's τ).
    pub beta: f64,
    /// EPA's w.
    pub w: f64,
    /// EPA's weight on weak negatives.
    pub lambda_weak: f64,
    /// InfoNCA's label temperature α (labels: softmax of rank scores / α).
    pub infonca_alpha: f64,
    /// Full-batch Adam steps per method.
    pub steps: usize,
    /// Peak learning rate (cosine decay to 0).
    pub lr: f64,
    /// Output directory.
    #[serde(skip)]
    pub out: PathBuf,
    /// Skip the PNG plots.
    #[serde(skip)]
    pub no_plots: bool,
}

impl Default for BanditOptions {
    fn default() -> Self {
        BanditOptions {
            seed: 0,
            n_prompts: 50,
            n_responses: 100,
            ref_policy: RefPolicy::Uniform,
            ref_sd: 1.0,
            reward_sd: 1.0,
            pool: 8,
            rounds: 40,
            k: 4,
            weak: 16,
            weak_sweep: vec![1, 2, 4, 8, 16, 32],
            methods: MethodKind::ALL.to_vec(),
            inits: 4,
            init_sd: 1.0,
            beta: 1.0,
            w: 1.0,
            lambda_weak: 1.0,
            infonca_alpha: 1.0,
            steps: 700,
            lr: 0.05,
            out: "lab-bandit".into(),
            no_plots: false,
        }
    }
}

/// Mean, sample sd, min and max over inits.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divides by n − 1; 0 for fewer than two values).
    pub sd: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Mean, sample sd, min and max of `v`.
    pub fn of(v: &[f64]) -> Summary {
        Summary {
            mean: metrics::mean(v),
            sd: metrics::sd(v),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
    /// `max − min`: how far the inits disagree.
    pub fn range(&self) -> f64 {
        self.max - self.min
    }
}

/// One init of one method.
#[derive(Clone, Debug, Serialize)]
pub struct InitResult {
    /// Index of the initialisation (its logits come from seed stream `INIT + init`).
    pub init: usize,
    /// Loss at the end of training, on the method's own rows.
    pub final_loss: f64,
    /// The trained policy's slope-1 and RLHF metrics (flattened into this object in the JSON).
    #[serde(flatten)]
    pub metrics: PolicyMetrics,
}

/// One method over all inits.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// Name in the results, report and plots (`dpo`, `epa_weak16`, `epa_strong+weak4`, …).
    pub label: String,
    /// Which loss: DPO, IPO, Plackett-Luce, InfoNCA or an EPA variant.
    pub kind: MethodKind,
    /// Weak negatives per row (0 for methods without them).
    pub n_weak: usize,
    /// Score-matrix rows per init and candidate columns.
    pub rows: usize,
    /// Candidate columns of the score matrix.
    pub cols: usize,
    /// Final loss over inits.
    pub final_loss: Summary,
    /// Pearson(r_θ, r*) over inits.
    pub pearson: Summary,
    /// ε̂ over all responses, over inits.
    pub eps_hat: Summary,
    /// ε̂ over the compared responses, over inits.
    pub eps_hat_seen: Summary,
    /// ε̂ over the never-compared responses, over inits.
    pub eps_hat_unseen: Summary,
    /// KL(π_θ ‖ π_ref) in nats, over inits.
    pub kl: Summary,
    /// `E_π[r*]`, the expected true reward, over inits.
    pub expected_reward: Summary,
    /// Probability mass π_θ puts on never-compared responses, over inits.
    pub mass_unseen: Summary,
    /// Mean-over-inits loss at 90% of training minus the final mean (≥ 0; small = converged).
    pub loss_drop_last_10pct: f64,
    /// Every init's own numbers.
    pub per_init: Vec<InitResult>,
}

/// What the world and its data look like.
#[derive(Clone, Debug, Serialize)]
pub struct WorldSummary {
    /// Prompts N.
    pub n_prompts: usize,
    /// Responses M (one space shared by every prompt).
    pub n_responses: usize,
    /// Annotated comparisons (ranked rounds) over all prompts.
    pub comparisons: usize,
    /// Distinct responses each prompt's comparisons include, over prompts.
    pub seen_per_prompt: Summary,
    /// Fraction of (prompt, response) pairs never compared.
    pub unseen_fraction: f64,
    /// Size of each prompt's weak-negative pool (responses compared under another prompt but never
    /// under this one), over prompts.
    pub weak_pool_per_prompt: Summary,
    /// Responses of a prompt's space that are in no prompt's comparisons (weak negatives can
    /// never reach them), per prompt.
    pub unreachable_per_prompt: Summary,
    /// Prompts whose Bradley-Terry MLE on the compared responses is finite (the directed
    /// "beaten-by" graph of the ranking-implied pairs is strongly connected — Zermelo/Ford).
    pub prompts_with_finite_bt_mle: usize,
    /// π_ref's own metrics (KL 0).
    pub reference_policy: PolicyMetrics,
    /// π* ∝ π_ref·exp(r*/β): the KL-regularised optimum every method aims at.
    pub optimal_policy: PolicyMetrics,
}

/// Everything `epa lab bandit` measured (this is `results.json`).
#[derive(Clone, Debug, Serialize)]
pub struct BanditResults {
    /// The options of the run.
    pub config: BanditOptions,
    /// The world and its data.
    pub world: WorldSummary,
    /// One result per method, in report order.
    pub methods: Vec<MethodResult>,
}

impl BanditResults {
    /// The result of the method labelled `label`, if it ran.
    pub fn method(&self, label: &str) -> Option<&MethodResult> {
        self.methods.iter().find(|m| m.label == label)
    }
}

/// The methods of a run, in report order.
pub fn method_list(args: &BanditOptions) -> anyhow::Result<Vec<Method>> {
    let want = |kind: MethodKind| args.methods.contains(&kind);
    let fixed =
        [MethodKind::Dpo, MethodKind::Ipo, MethodKind::PlackettLuce, MethodKind::Infonca, MethodKind::EpaStrong];
    let mut v: Vec<Method> = fixed.into_iter().filter(|&k| want(k)).map(|k| Method::new(k, 0)).collect();
    if want(MethodKind::EpaWeak) {
        anyhow::ensure!(args.weak > 0, "--weak must be > 0 for epa_weak");
        v.push(Method::new(MethodKind::EpaWeak, args.weak));
    }
    if want(MethodKind::Epa) {
        let mut sweep = args.weak_sweep.clone();
        sweep.sort_unstable();
        sweep.dedup();
        anyhow::ensure!(
            !sweep.is_empty() && sweep[0] > 0,
            "--weak-sweep needs positive counts, got {:?}",
            args.weak_sweep
        );
        v.extend(sweep.into_iter().map(|n| Method::new(MethodKind::Epa, n)));
    }
    anyhow::ensure!(!v.is_empty(), "--methods selects nothing");
    Ok(v)
}

fn validate(a: &BanditOptions) -> anyhow::Result<()> {
    anyhow::ensure!(a.inits >= 1, "--inits must be at least 1");
    anyhow::ensure!(a.steps >= 1, "--steps must be at least 1");
    anyhow::ensure!(a.beta > 0.0 && a.beta.is_finite(), "--beta must be > 0, got {}", a.beta);
    anyhow::ensure!(a.lr > 0.0 && a.lr.is_finite(), "--lr must be > 0, got {}", a.lr);
    anyhow::ensure!(a.w > 0.0 && a.lambda_weak > 0.0, "--w and --lambda-weak must be > 0");
    anyhow::ensure!(a.infonca_alpha > 0.0, "--infonca-alpha must be > 0");
    anyhow::ensure!(a.init_sd >= 0.0 && a.init_sd.is_finite(), "--init-sd must be >= 0");
    Ok(())
}

/// Runs the whole lab and writes results.json, report.md and the plots into `args.out`.
pub fn run_bandit(args: &BanditOptions) -> anyhow::Result<BanditResults> {
    let (results, policies) = simulate(args)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::to_string_pretty(&results)? + "\n";
    write(&args.out.join("results.json"), &json)?;
    write(&args.out.join("report.md"), &report::markdown(&results))?;
    if !args.no_plots {
        plots::scatter(&args.out.join("scatter.png"), &policies)?;
        plots::weak_sweep(&args.out.join("weak_sweep.png"), &results)?;
    }
    Ok(results)
}

fn write(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Learned vs true rewards of a few trained policies, for the scatter plot.
pub struct PolicySample {
    /// The method's label (as in [`MethodResult::label`]).
    pub label: String,
    /// Which initialisation.
    pub init: usize,
    /// (true reward, learned reward − per-prompt mean offset, seen?) for every (x, y).
    pub points: Vec<(f64, f64, bool)>,
}

/// Trains every method; returns the results and the policies the scatter plot shows.
pub fn simulate(args: &BanditOptions) -> anyhow::Result<(BanditResults, Vec<PolicySample>)> {
    validate(args)?;
    let world =
        World::generate(args.n_prompts, args.n_responses, args.ref_policy, args.ref_sd, args.reward_sd, args.seed)?;
    let methods = method_list(args)?;
    let max_weak = methods.iter().map(|m| m.n_weak).max().unwrap_or(0);
    let data = data::sample(&world, args.pool, args.rounds, args.k, max_weak, args.seed)?;
    let hyper = Hyper { beta: args.beta, w: args.w, lambda_weak: args.lambda_weak, infonca_alpha: args.infonca_alpha };
    let spec =
        FitSettings { steps: args.steps, lr: args.lr, inits: args.inits, init_sd: args.init_sd, seed: args.seed };
    let init = init_logits(&world, &spec)?;
    // The tabular lab is tiny and its outputs are byte-reproducible: always the CPU.
    let device = crate::device::DeviceSpec::Cpu.device()?.autodiff();
    let scatter_labels = scatter_methods(&methods);
    let mut out = Vec::new();
    let mut samples = Vec::new();
    for method in &methods {
        let lay = layout(method, &data);
        let cfg = loss_config(method, &hyper)?;
        let ib = IndexBatch::new(&lay, &world, args.inits, needs_scores(method), &device);
        let started = std::time::Instant::now();
        let trained =
            train(&world, &cfg, &ib, &init, &spec, &device).with_context(|| format!("training {}", method.label()))?;
        // Progress on stderr only: timings never enter the (byte-reproducible) outputs.
        eprintln!(
            "lab bandit: trained {} ({} inits) in {:.1}s",
            method.label(),
            args.inits,
            started.elapsed().as_secs_f64()
        );
        let per_init: Vec<InitResult> = (0..args.inits)
            .map(|i| InitResult {
                init: i,
                final_loss: trained.final_loss[i],
                metrics: evaluate(&world, &trained.logits[i], &data.seen, args.beta),
            })
            .collect();
        if scatter_labels.contains(&method.label()) {
            for i in 0..args.inits.min(2) {
                samples.push(sample_points(&world, &data.seen, &trained.logits[i], args.beta, method.label(), i));
            }
        }
        out.push(summarise(method, &lay, per_init, trained.loss_at_90pct));
    }
    let (reference_policy, optimal_policy) = metrics::reference_points(&world, args.beta);
    let seen: Vec<f64> = data.seen_counts.iter().map(|&c| c as f64).collect();
    let weak: Vec<f64> = data.weak_pool_sizes.iter().map(|&c| c as f64).collect();
    let unseen = data.seen.iter().filter(|s| !**s).count() as f64 / data.seen.len() as f64;
    let unreachable: Vec<f64> = (0..world.n_prompts)
        .map(|x| (world.n_responses - data.seen_counts[x] - data.weak_pool_sizes[x]) as f64)
        .collect();
    let world_summary = WorldSummary {
        n_prompts: world.n_prompts,
        n_responses: world.n_responses,
        comparisons: data.rounds.len(),
        seen_per_prompt: Summary::of(&seen),
        unseen_fraction: unseen,
        weak_pool_per_prompt: Summary::of(&weak),
        unreachable_per_prompt: Summary::of(&unreachable),
        prompts_with_finite_bt_mle: data::finite_bt_mle(&data, world.n_prompts, world.n_responses),
        reference_policy,
        optimal_policy,
    };
    Ok((BanditResults { config: args.clone(), world: world_summary, methods: out }, samples))
}

/// DPO and the EPA run with the most weak negatives.
fn scatter_methods(methods: &[Method]) -> Vec<String> {
    let mut v = vec![Method::new(MethodKind::Dpo, 0).label()];
    if let Some(m) = methods.iter().filter(|m| m.kind == MethodKind::Epa).max_by_key(|m| m.n_weak) {
        v.push(m.label());
    }
    v
}

fn sample_points(world: &World, seen: &[bool], logits: &[f32], beta: f64, label: String, init: usize) -> PolicySample {
    let logp = metrics::log_policy(world, logits);
    let r = metrics::learned_reward(world, &logp, beta);
    let m = world.n_responses;
    let mut points = Vec::with_capacity(r.len());
    for x in 0..world.n_prompts {
        let rx = &r[x * m..(x + 1) * m];
        let sx = world.row(&world.reward, x);
        let offset = rx.iter().zip(sx).map(|(a, b)| a - b).sum::<f64>() / m as f64;
        points.extend((0..m).map(|y| (sx[y], rx[y] - offset, seen[x * m + y])));
    }
    PolicySample { label, init, points }
}

fn summarise(method: &Method, lay: &methods::ScoreRows, per_init: Vec<InitResult>, loss_at_90pct: f64) -> MethodResult {
    let col = |f: &dyn Fn(&InitResult) -> f64| Summary::of(&per_init.iter().map(f).collect::<Vec<_>>());
    let final_loss = col(&|r| r.final_loss);
    MethodResult {
        label: method.label(),
        kind: method.kind,
        n_weak: method.n_weak,
        rows: lay.rows.len(),
        cols: lay.roles.len(),
        pearson: col(&|r| r.metrics.pearson),
        eps_hat: col(&|r| r.metrics.eps_hat),
        eps_hat_seen: col(&|r| r.metrics.eps_hat_seen),
        eps_hat_unseen: col(&|r| r.metrics.eps_hat_unseen),
        kl: col(&|r| r.metrics.kl),
        expected_reward: col(&|r| r.metrics.expected_reward),
        mass_unseen: col(&|r| r.metrics.mass_unseen),
        loss_drop_last_10pct: loss_at_90pct - final_loss.mean,
        final_loss,
        per_init,
    }
}
