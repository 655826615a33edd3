//! `epa bench`: forward and training-step throughput of a SmolLM2-135M-shaped model (random
//! weights) on this machine. Medians over repeated runs; FLOPs counted as 2·params·tokens
//! (forward) and 6·params·tokens (training step).

use anyhow::Result;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

use crate::model::llama::init_random;
use crate::model::{Layout, ModelConfig, Rope};
use crate::scores::{Targets, score};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Use a tiny model instead of the SmolLM2-135M shape (for a quick check).
    #[arg(long)]
    pub tiny: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Serialize, Debug)]
pub struct BenchRow {
    pub name: String,
    pub median_s: f64,
    pub tokens_per_s: f64,
    pub gflops: f64,
    pub peak_rss_mib: f64,
}

/// Peak resident set size of this process so far (Linux `VmHWM`), MiB.
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

pub fn run(args: &BenchArgs) -> Result<Vec<BenchRow>> {
    let cfg = if args.tiny {
        ModelConfig { num_hidden_layers: 2, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 512, ..ModelConfig::smollm2_135m() }
    } else {
        ModelConfig::smollm2_135m()
    };
    let params = cfg.num_params() as f64;
    let (b, t) = (args.batch, args.seq_len);
    let tokens = (b * t) as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let seqs: Vec<Vec<u32>> = (0..b).map(|_| (0..t).map(|_| rng.random_range(3..cfg.vocab_size as u32)).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let ones: Vec<Vec<u8>> = seqs.iter().map(|s| vec![1u8; s.len()]).collect();
    let masks: Vec<&[u8]> = ones.iter().map(|m| m.as_slice()).collect();
    let layout = Layout::padded(&refs, 0);
    let targets = Targets::padded(&layout, &refs, &masks, false);
    let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
    println!(
        "model: {} layers, hidden {}, {:.1}M params; batch {b} × {t} tokens; {} threads",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        params / 1e6,
        rayon_threads()
    );
    let mut rows = Vec::new();

    // Forward (inference, no autodiff).
    let device = Device::flex();
    let model = init_random(&cfg, &device);
    let mut times = Vec::new();
    for i in 0..=args.reps {
        let t0 = Instant::now();
        let s = score(&model, &rope, &layout, &targets, &device).sums;
        let _ = s.into_data();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let m = median(times);
    rows.push(BenchRow { name: "forward".into(), median_s: m, tokens_per_s: tokens / m, gflops: 2.0 * params * tokens / m / 1e9, peak_rss_mib: peak_rss_mib() });
    drop(model);

    // Training step: forward + backward + AdamW.
    let device = Device::flex().autodiff();
    let mut model = init_random(&cfg, &device);
    let mut optim = AdamWConfig::new().init();
    let mut times = Vec::new();
    for i in 0..=args.reps {
        let t0 = Instant::now();
        let s = score(&model, &rope, &layout, &targets, &device).sums;
        let loss = s.mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-5, model, grads);
        let _ = model.norm.gamma.val().into_data();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let m = median(times);
    rows.push(BenchRow { name: "train_step".into(), median_s: m, tokens_per_s: tokens / m, gflops: 6.0 * params * tokens / m / 1e9, peak_rss_mib: peak_rss_mib() });
    let _ = model.num_params();

    println!("{:<12} {:>10} {:>12} {:>10} {:>12}", "what", "median s", "tokens/s", "GFLOP/s", "peak RSS MiB");
    for r in &rows {
        println!("{:<12} {:>10.3} {:>12.1} {:>10.1} {:>12.0}", r.name, r.median_s, r.tokens_per_s, r.gflops, r.peak_rss_mib);
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(rows)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
