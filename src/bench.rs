//! `epa bench`: training-step, reference-pass and generation throughput of a SmolLM2-135M-shaped
//! model (random weights) on this machine, at the shapes of issue 8: P prompts × `prompt_len`
//! tokens, each with C candidates of `response_len` tokens.
//!
//! Rows are losses × layouts: DPO (2 candidates), EPA with 1 strong + 2 weak negatives
//! (4 candidates) and EPA with 1 strong + 6 weak (8 candidates), each with prefix sharing (one row
//! per prompt: `[prompt | response₁ | …]`) and without (every candidate a padded sequence
//! `prompt ⊕ response`). Every row goes through the trainer's own code path:
//! [`crate::train::step::batch_loss`] (layout, scoring, `[P × C]` arrangement, the configured loss
//! of [`crate::losses`]) → backward → AdamW, and [`crate::scores::Scorer::pairs`] for the
//! reference pass (no autodiff).
//!
//! Useful work is counted as in the literature: 6·params·tokens per training step and
//! 2·params·tokens per reference pass, where `tokens` is the token count of the *unshared* layout
//! (P·C·(prompt_len + response_len)), so prefix sharing shows up as more useful work per second.
//! The tokens the shared layout actually runs are reported beside it.
//!
//! ```text
//! epa bench                       # DPO and EPA(1+2), shared and separate (a few minutes)
//! epa bench --rows all --reps 3   # all six rows, median of 3
//! epa bench --tiny                # a 2-layer model: seconds, checks the plumbing
//! epa bench --json bench.json     # machine-readable results (bench/run.sh compares them to PyTorch)
//! ```

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;
use std::time::Instant;

use crate::data::{Batch, BatchGroup, GroupStore, TokenCandidate, TokenGroup};
use crate::device::DeviceOptions;
use crate::losses::LossConfig;
use crate::model::generate::{SampleConfig, generate};
use crate::model::llama::init_random;
use crate::model::{CausalLm, ModelConfig, Rope};
use crate::scores::{Attention, Scorer};
use crate::train::step::{arrange, batch_loss};

/// What `epa bench` times ([`run`]'s options; the command line's `BenchArgs` converts into it).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Prompts per batch.
    pub prompts: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
    /// Tokens per response (candidate).
    pub response_len: usize,
    /// The losses to run, in order.
    pub rows: Vec<BenchLoss>,
    /// The layouts each loss runs in, in order.
    pub layouts: Vec<BenchLayout>,
    /// Timed repetitions per row (the median is reported).
    pub reps: usize,
    /// Untimed warm-up steps per row (one global warm-up step always runs first).
    pub warmup: usize,
    /// New tokens per prompt in the generation benchmark (0 = skip it).
    pub gen_tokens: usize,
    /// Skip the reference-pass timing.
    pub no_reference: bool,
    /// Let mimalloc return freed memory to the OS after its default delay (the behaviour before
    /// `epa` turned [`keep_freed_memory`] on for every command): measures what keeping it buys.
    pub purge_freed_memory: bool,
    /// Dense `[T × T]` attention masks for prefix-shared rows instead of block-sparse attention
    /// (the layout before the block path existed; for before/after comparisons).
    pub dense_attention: bool,
    /// The unfused log-prob head (logits → log-softmax → gather) instead of the fused one
    /// (`model.fused_head = false`; for before/after comparisons).
    pub full_head: bool,
    /// Model shape (random weights).
    pub shape: BenchShape,
    /// Write the results as JSON here.
    pub json: Option<std::path::PathBuf>,
    /// Device and compute dtype the rows run on.
    pub device: DeviceOptions,
}

/// A loss of the benchmark and its candidates per prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchLoss {
    /// DPO: 2 candidates.
    Dpo,
    /// EPA with 1 strong + 2 weak negatives: 4 candidates.
    Epa1Plus2,
    /// EPA with 1 strong + 6 weak negatives: 8 candidates.
    Epa1Plus6,
}

impl BenchLoss {
    /// Every loss, in table order.
    pub const ALL: [BenchLoss; 3] = [BenchLoss::Dpo, BenchLoss::Epa1Plus2, BenchLoss::Epa1Plus6];

    /// The row's name in the table and the JSON (`dpo`, `epa1+2`, `epa1+6`).
    pub fn name(self) -> &'static str {
        self.kind().name
    }

    fn kind(self) -> RowKind {
        match self {
            BenchLoss::Dpo => RowKind { name: "dpo", loss: "dpo", weak: 0 },
            BenchLoss::Epa1Plus2 => RowKind { name: "epa1+2", loss: "epa", weak: 2 },
            BenchLoss::Epa1Plus6 => RowKind { name: "epa1+6", loss: "epa", weak: 6 },
        }
    }
}

/// How a row lays out a prompt's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchLayout {
    /// Prefix sharing: one row per prompt, `[prompt | response₁ | …]`.
    Shared,
    /// Every candidate a padded sequence `prompt ⊕ response`.
    Separate,
}

/// A loss and its candidate count.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RowKind {
    name: &'static str,
    loss: &'static str,
    weak: usize,
}

/// One row of the results: a loss in one layout, timed.
#[derive(Serialize, Debug, Clone)]
pub struct BenchRow {
    /// `dpo`, `epa1+2`, `epa1+6`.
    pub name: String,
    /// The loss of [`crate::losses`] the row trains with (`dpo` or `epa`).
    pub loss: String,
    /// Candidates per prompt (the C of the `[P × C]` score matrix).
    pub candidates: usize,
    /// True for the shared layout (prefix sharing), false for padded separate sequences.
    pub prefix_sharing: bool,
    /// Tokens of the unshared layout, P·C·(prompt + response): the useful work.
    pub useful_tokens: usize,
    /// Tokens the layout actually runs (rows × padded length).
    pub computed_tokens: usize,
    /// Training step (policy forward + backward + AdamW), median seconds.
    pub step_s: f64,
    /// Median CPU seconds (all threads) of a step: about `threads × step_s` on an idle machine.
    pub step_cpu_s: f64,
    /// Median seconds of the step's phases: policy forward + loss, backward, AdamW.
    pub forward_s: f64,
    /// Median seconds of the backward pass.
    pub backward_s: f64,
    /// Median seconds of the AdamW update.
    pub optimizer_s: f64,
    /// Seconds of every timed step (all three phases), in run order; warm-up steps left out.
    pub step_all_s: Vec<f64>,
    /// Useful tokens per second of a training step: `useful_tokens / step_s`.
    pub step_tokens_per_s: f64,
    /// 6·params·useful_tokens / step_s.
    pub step_gflops: f64,
    /// Reference pass (no autodiff), median seconds (NaN when skipped).
    pub reference_s: f64,
    /// 2·params·useful_tokens / reference_s.
    pub reference_gflops: f64,
    /// Peak resident set size while this row ran, MiB.
    pub peak_rss_mib: f64,
    /// Device memory the backend's pools reserved, the largest seen at the end of a step phase
    /// (pools keep their pages, so this is the peak); `None` on the CPU backend.
    pub peak_device_mib: Option<f64>,
}

/// The generation benchmark: greedy decoding from random weights with the KV cache, all prompts in
/// one batch.
#[derive(Serialize, Debug, Clone)]
pub struct GenerationRow {
    /// Prompts generated for at once.
    pub prompts: usize,
    /// Tokens per prompt.
    pub prompt_len: usize,
    /// New tokens asked for per prompt (`--gen-tokens`).
    pub new_tokens: usize,
    /// Prefill + first token, seconds.
    pub first_token_s: f64,
    /// Seconds to generate all `new_tokens` (prefill included).
    pub total_s: f64,
    /// New tokens per second after the first (decode with the KV cache).
    pub decode_tokens_per_s: f64,
}

/// What `epa bench` measured: the setup and every row (what `--json` writes).
#[derive(Serialize, Debug)]
pub struct BenchReport {
    /// The program that measured: `epa` (bench/run.sh's PyTorch baseline writes `pytorch`).
    pub tool: &'static str,
    /// The model: layers, hidden size, parameter count, shape name, and whether it is the tiny one.
    pub model: serde_json::Value,
    /// The batch shape: prompts, prompt_len, response_len and timed repetitions (reps).
    pub shape: serde_json::Value,
    /// Threads of the rayon pool (what the CPU backend computes on).
    pub threads: usize,
    /// What makes numbers from two machines (or two programs) comparable: CPU model, its SIMD flags,
    /// and the matrix-multiply kernels this binary runs on it.
    pub machine: serde_json::Value,
    /// One row per loss × layout, in the order run.
    pub rows: Vec<BenchRow>,
    /// The generation benchmark; `None` with `--gen-tokens 0`.
    pub generation: Option<GenerationRow>,
}

unsafe extern "C" {
    /// mimalloc's option setter (part of the C library that the `mimalloc` crate links).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Makes mimalloc keep freed pages instead of purging them (returning them to the OS) a short
/// delay after they are freed. A training step frees and re-allocates hundreds of MiB of activations
/// and gradients; with purging every re-allocation page-faults and the kernel zeroes the pages
/// again (`clear_page_erms` was 16 % of a DPO step's profile). Same effect as the environment
/// variable `MIMALLOC_PURGE_DELAY=-1`. Call it once, early (e.g. first thing in `main`).
pub fn keep_freed_memory() {
    // SAFETY: sets a process-global integer option of the allocator; no memory is touched.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// mimalloc's default: purge freed pages 10 ms after they are freed.
pub fn purge_freed_memory() {
    // SAFETY: as in `keep_freed_memory`.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 10) }
}

/// MiB the device's memory pools hold (`None` where the backend does not report them: the CPU).
fn device_reserved_mib(device: &Device) -> Option<f64> {
    device.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1u64 << 20) as f64)
}

/// Peak resident set size of this process since the last [`reset_peak_rss`] (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The CPU model (`/proc/cpuinfo`), the SIMD features that decide gemm's kernels, and those kernels:
/// burn is built with `x86-v4`, so gemm runs AVX-512 kernels where the CPU has AVX-512 and its AVX2 +
/// FMA ones otherwise (chosen at run time).
pub fn machine() -> serde_json::Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(str::trim)
        .unwrap_or("unknown");
    #[cfg(target_arch = "x86_64")]
    let (flags, gemm) = {
        let f = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512dq", std::arch::is_x86_feature_detected!("avx512dq")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
        ];
        let has = |n: &str| f.iter().any(|&(k, v)| k == n && v);
        let gemm = if has("avx512f") {
            "gemm AVX-512 (x86-v4)"
        } else if has("avx2") && has("fma") {
            "gemm AVX2 + FMA"
        } else {
            "gemm SSE / scalar"
        };
        (f.iter().filter(|(_, v)| *v).map(|(k, _)| *k).collect::<Vec<_>>(), gemm)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (flags, gemm): (Vec<&str>, &str) = (vec![], "gemm (this architecture's kernels)");
    json!({ "cpu": model, "simd": flags, "matmul": gemm, "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) })
}

/// CPU time (user + system, all threads) of this process so far, seconds (Linux; NaN elsewhere).
/// Less disturbed than wall time when other programs share the cores.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    if f.len() == 2 { (f[0] + f[1]) / 100.0 } else { f64::NAN }
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0; silently does nothing elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The model shapes `epa bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum BenchShape {
    /// SmolLM2-135M (Llama; 30 layers, hidden 576, vocab 49152).
    #[value(name = "smollm2-135m")]
    #[serde(rename = "smollm2-135m")]
    Smollm2_135m,
    /// Qwen2.5-0.5B (Qwen2; 24 layers, hidden 896, vocab 151936).
    #[value(name = "qwen2.5-0.5b")]
    #[serde(rename = "qwen2.5-0.5b")]
    Qwen2_5_0_5b,
    /// 2 layers, hidden 64, vocab 512.
    #[value(name = "tiny")]
    #[serde(rename = "tiny")]
    Tiny,
}

fn model_config(shape: BenchShape) -> ModelConfig {
    if shape == BenchShape::Qwen2_5_0_5b {
        return ModelConfig::qwen2_5_0_5b();
    }
    if shape == BenchShape::Tiny {
        ModelConfig {
            num_hidden_layers: 2,
            hidden_size: 64,
            intermediate_size: 128,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            vocab_size: 512,
            ..ModelConfig::smollm2_135m()
        }
    } else {
        ModelConfig::smollm2_135m()
    }
}

/// A store of random-token groups (positive + one strong negative each): the first `prompts`
/// groups form the batch; every group's candidates serve as weak negatives of the others.
/// Built from token ids, so no tokenizer is needed.
pub fn synthetic_store(
    groups: usize,
    prompt_len: usize,
    response_len: usize,
    vocab: usize,
    seed: u64,
) -> Result<GroupStore> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(3..vocab as u32)).collect() };
    let groups: Vec<TokenGroup> = (0..groups)
        .map(|_| TokenGroup {
            prompt_ids: ids(prompt_len),
            positive: TokenCandidate { ids: ids(response_len), score: Some(1.0) },
            strong: vec![TokenCandidate { ids: ids(response_len), score: Some(0.0) }],
        })
        .collect();
    Ok(GroupStore::from_tokens(groups))
}

/// The batch of the first `prompts` groups, each with `weak` responses of other groups.
fn batch_of(store: &GroupStore, prompts: usize, weak: usize) -> Batch {
    let n = store.len();
    let groups = (0..prompts)
        .map(|g| {
            let others = (1..n).map(|k| (g + k) % n).flat_map(|o| store.group(o).candidate_indices());
            BatchGroup { group: g, weak: others.take(weak).collect() }
        })
        .collect();
    Batch { epoch: 0, index: 0, groups }
}

/// Everything a row needs besides the model.
struct Setup<'a> {
    store: &'a GroupStore,
    rope: &'a Rope,
    params: f64,
    args: &'a BenchOptions,
}

impl Setup<'_> {
    /// The bench's scorer for `model` (pad id 0; `--dense-attention` switches off block attention).
    fn scorer<'m>(&'m self, model: &'m CausalLm, device: &Device) -> Scorer<'m> {
        let attention = if self.args.dense_attention { Attention::Dense } else { Attention::Block };
        Scorer::new(model, self.rope, 0, device).attention(attention)
    }
}

/// Seconds of one training step: policy forward + loss, backward, optimiser step.
#[derive(Debug, Clone, Copy)]
struct StepTimes {
    cpu: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

impl StepTimes {
    fn total(&self) -> f64 {
        self.forward + self.backward + self.optimizer
    }
}

/// One training step through the trainer's path, timed by phase.
#[allow(clippy::too_many_arguments)]
fn train_step(
    model: CausalLm,
    optim: &mut ModuleOptimizer,
    s: &Setup,
    batch: &Batch,
    loss: &LossConfig,
    reference: &[f32],
    sharing: bool,
    device: &Device,
    device_peak: &mut Option<f64>,
) -> Result<(CausalLm, StepTimes)> {
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut refs = |pairs: &[(usize, usize)]| -> Result<Vec<f32>> {
        if pairs.len() != reference.len() {
            bail!("reference has {} sums for {} pairs", reference.len(), pairs.len());
        }
        Ok(reference.to_vec())
    };
    let scorer = s.scorer(&model, device).prefix_sharing(sharing);
    let (out, _) = batch_loss(&scorer, s.store, batch, &mut refs, loss)?;
    let _ = out.loss.clone().into_data();
    let t1 = Instant::now();
    *device_peak = device_reserved_mib(device).map(|m| m.max(device_peak.unwrap_or(0.0)));
    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
    *device_peak = device_reserved_mib(device).map(|m| m.max(device_peak.unwrap_or(0.0)));
    // A GPU backend queues the backward pass: wait for it so the phase times are the device's.
    device.sync().map_err(|e| anyhow::anyhow!("device error in the backward pass: {e:?}"))?;
    let t2 = Instant::now();
    let model = optim.step(1e-6, model, grads);
    // Read a parameter so that a lazy backend finishes the update inside the timing.
    let _ = model.norm.gamma.val().into_data();
    let t3 = Instant::now();
    *device_peak = device_reserved_mib(device).map(|m| m.max(device_peak.unwrap_or(0.0)));
    let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
    Ok((
        model,
        StepTimes { cpu: cpu_seconds() - c0, forward: secs(t0, t1), backward: secs(t1, t2), optimizer: secs(t2, t3) },
    ))
}

fn run_row(kind: RowKind, sharing: bool, s: &Setup, cfg: &ModelConfig) -> Result<BenchRow> {
    let args = s.args;
    let batch = batch_of(s.store, args.prompts, kind.weak);
    let arrangement = arrange(&batch, s.store);
    let loss = LossConfig::from_names(&[kind.loss], None)?;
    let candidates = arrangement.columns;
    let useful_tokens = arrangement.pairs.len() * (args.prompt_len + args.response_len);
    let computed_tokens =
        if sharing { args.prompts * (args.prompt_len + candidates * args.response_len) } else { useful_tokens };
    reset_peak_rss();
    let plain = args.device.device()?;
    let device = plain.clone().autodiff();
    device.seed(0);
    let mut model = init_random(cfg, &device);
    model.precision = args.device.dtype;
    model.fused_head = !args.full_head;

    // Reference pass: the frozen initial weights, no autodiff.
    let frozen = model.valid();
    let mut ref_times = Vec::new();
    let mut reference = Vec::new();
    let ref_reps = if args.no_reference { 1 } else { args.reps };
    for _ in 0..ref_reps {
        let t0 = Instant::now();
        reference = s.scorer(&frozen, &plain).prefix_sharing(sharing).pairs_host(s.store, &arrangement.pairs);
        ref_times.push(t0.elapsed().as_secs_f64());
    }
    drop(frozen);
    let reference_s = if args.no_reference { f64::NAN } else { median(ref_times) };

    let mut optim = AdamWConfig::new().init();
    let mut times = Vec::new();
    let mut device_peak = None;
    for i in 0..args.warmup + args.reps {
        let (m, t) = train_step(model, &mut optim, s, &batch, &loss, &reference, sharing, &device, &mut device_peak)?;
        model = m;
        if i >= args.warmup {
            times.push(t);
        }
    }
    let phase = |f: fn(&StepTimes) -> f64| median(times.iter().map(f).collect());
    let step_s = phase(StepTimes::total);
    let times: Vec<f64> = times.iter().map(StepTimes::total).collect();
    Ok(BenchRow {
        name: kind.name.into(),
        loss: kind.loss.into(),
        candidates,
        prefix_sharing: sharing,
        useful_tokens,
        computed_tokens,
        step_s,
        step_cpu_s: phase(|t| t.cpu),
        forward_s: phase(|t| t.forward),
        backward_s: phase(|t| t.backward),
        optimizer_s: phase(|t| t.optimizer),
        step_all_s: times,
        step_tokens_per_s: useful_tokens as f64 / step_s,
        step_gflops: 6.0 * s.params * useful_tokens as f64 / step_s / 1e9,
        reference_s,
        reference_gflops: 2.0 * s.params * useful_tokens as f64 / reference_s / 1e9,
        peak_rss_mib: peak_rss_mib(),
        peak_device_mib: device_peak,
    })
}

fn run_generation(s: &Setup, cfg: &ModelConfig) -> Result<GenerationRow> {
    let args = s.args;
    let device = args.device.device()?;
    let mut model = init_random(cfg, &device);
    model.precision = args.device.dtype;
    let prompts: Vec<Vec<u32>> = (0..args.prompts).map(|g| s.store.group(g).prompt_ids().to_vec()).collect();
    let timed = |n: usize| {
        let sc = SampleConfig { max_new_tokens: n, ..Default::default() };
        let t0 = Instant::now();
        let out = generate(&model, s.rope, &prompts, &sc, 0, &device);
        (t0.elapsed().as_secs_f64(), out)
    };
    timed(1); // warm-up: the first call in a process also pays for allocations
    let (first, _) = timed(1);
    let (total, out) = timed(args.gen_tokens);
    let made: usize = out.iter().map(|o| o.len()).sum();
    Ok(GenerationRow {
        prompts: args.prompts,
        prompt_len: args.prompt_len,
        new_tokens: args.gen_tokens,
        first_token_s: first,
        total_s: total,
        decode_tokens_per_s: made.saturating_sub(args.prompts) as f64 / (total - first).max(1e-9),
    })
}

fn print_table(r: &BenchReport) {
    println!(
        "{:<8} {:>5} {:>8} {:>7} {:>8} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>9}",
        "row",
        "cands",
        "layout",
        "tokens",
        "computed",
        "step s",
        "CPU s",
        "cores",
        "GFLOP/s",
        "ref s",
        "ref GF/s",
        "peak MiB"
    );
    for x in &r.rows {
        println!(
            "{:<8} {:>5} {:>8} {:>7} {:>8} {:>9.3} {:>9.3} {:>6.2} {:>8.1} {:>8.3} {:>8.1} {:>9.0}",
            x.name,
            x.candidates,
            if x.prefix_sharing { "shared" } else { "separate" },
            x.useful_tokens,
            x.computed_tokens,
            x.step_s,
            x.step_cpu_s,
            x.step_cpu_s / x.step_s,
            x.step_gflops,
            x.reference_s,
            x.reference_gflops,
            x.peak_rss_mib
        );
    }
    let step = |name: &str, shared: bool| {
        r.rows.iter().find(|x| x.name == name && x.prefix_sharing == shared).map(|x| x.step_s)
    };
    for shared in [true, false] {
        if let (Some(d), Some(e)) = (step("dpo", shared), step("epa1+2", shared)) {
            println!("EPA(1+2) / DPO step time, {}: {:.2}×", if shared { "shared" } else { "separate" }, e / d);
        }
    }
    if let Some(g) = &r.generation {
        println!(
            "generation: {} prompts × {} tokens, {} new: first token {:.3} s, {:.1} new tokens/s after it",
            g.prompts, g.prompt_len, g.new_tokens, g.first_token_s, g.decode_tokens_per_s
        );
    }
}

/// Runs the benchmark: one untimed warm-up step, then every loss × layout row and the generation
/// benchmark; prints the table, writes the JSON when asked, and returns the report.
pub fn run(args: &BenchOptions) -> Result<BenchReport> {
    if args.prompts == 0 || args.prompt_len == 0 || args.response_len == 0 || args.reps == 0 {
        bail!("--prompts, --prompt-len, --response-len and --reps must be > 0");
    }
    if args.purge_freed_memory {
        purge_freed_memory();
    }
    if args.rows.is_empty() || args.layouts.is_empty() {
        bail!("--rows and --layouts must name at least one row and layout");
    }
    let kinds: Vec<RowKind> = args.rows.iter().map(|r| r.kind()).collect();
    let layouts: Vec<bool> = args.layouts.iter().map(|&l| l == BenchLayout::Shared).collect();
    let shape = args.shape;
    let cfg = model_config(shape);
    let params = cfg.num_params() as f64;
    // Enough groups that every prompt can draw 6 weak negatives from the others.
    let store = synthetic_store(args.prompts.max(4), args.prompt_len, args.response_len, cfg.vocab_size, 0)?;
    let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
    let s = Setup { store: &store, rope: &rope, params, args };
    let threads = rayon::current_num_threads();
    println!(
        "model: {} layers, hidden {}, {:.1}M params; {} prompts × {} tokens, responses of {} tokens; {} threads",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        params / 1e6,
        args.prompts,
        args.prompt_len,
        args.response_len,
        threads
    );
    let machine = machine();
    println!(
        "machine: {}; {}; matmul: {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["simd"],
        machine["matmul"].as_str().unwrap_or("?")
    );
    // One untimed step of one prompt first (thread pool and allocator warm-up).
    let warm = BenchOptions { prompts: 1, reps: 1, warmup: 0, no_reference: true, ..args.clone() };
    run_row(kinds[0], layouts[0], &Setup { args: &warm, ..s }, &cfg)?;

    let mut rows = Vec::new();
    for &kind in &kinds {
        for &sharing in &layouts {
            let row = run_row(kind, sharing, &s, &cfg)?;
            eprintln!(
                "{} {}: step {:.3} s, {:.3} CPU s (forward {:.3}, backward {:.3}, AdamW {:.3}), reference {:.3} s",
                row.name,
                if sharing { "shared" } else { "separate" },
                row.step_s,
                row.step_cpu_s,
                row.forward_s,
                row.backward_s,
                row.optimizer_s,
                row.reference_s
            );
            rows.push(row);
        }
    }
    let generation = if args.gen_tokens > 0 { Some(run_generation(&s, &cfg)?) } else { None };
    let report = BenchReport {
        tool: "epa",
        model: json!({ "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "params": cfg.num_params(), "shape": shape, "tiny": shape == BenchShape::Tiny }),
        shape: json!({ "prompts": args.prompts, "prompt_len": args.prompt_len, "response_len": args.response_len, "reps": args.reps }),
        threads,
        machine,
        rows,
        generation,
    };
    print_table(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(report)
}
