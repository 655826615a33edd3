//! epa: Energy Preference Alignment and the DPO family for causal language models, on burn.
//!
//! The pipeline, one module per stage:
//! data → model → scores (log-probs per candidate) → losses → train → eval / lab.
//! Beside it: `gold` (the known reward of the controlled experiment) and `artifacts` (the real
//! model and lexicon, fetched from package registries and checked by sha256).
//!
//! The command line (`epa train`, `epa score`, …) is a thin layer over this library: everything it
//! does, a Rust program can do with the types re-exported here.
//!
//! # Quick start: two EPA steps on the tiny test model
//!
//! ```
//! use epa::{GroupStore, LossConfig, TrainConfig, Trainer, load_model, training_device};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! // TRL's preference format: one JSON object per line.
//! let data = dir.path().join("prefs.jsonl");
//! std::fs::write(&data, concat!(
//!     r#"{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}"#, "\n",
//!     r#"{"prompt": "Two and two make", "chosen": " four.", "rejected": " five."}"#, "\n",
//! ))?;
//!
//! let mut cfg = TrainConfig::default();
//! cfg.model.path = "tests/fixtures/tiny-llama".into();
//! cfg.data.paths = vec![data];
//! cfg.loss = LossConfig::from_names(&["epa"], None)?;
//! cfg.optim.max_steps = 2;
//! cfg.output.dir = dir.path().join("run");
//!
//! let policy = load_model(&cfg.model.path, &training_device(&cfg)?)?;
//! let (groups, report) = GroupStore::build(&cfg.data, policy.codec()?)?;
//! assert_eq!(report.groups, 2);
//! let mut trainer = Trainer::new(cfg, policy, &groups)?;
//! while !trainer.is_done() {
//!     let metrics = trainer.step()?.expect("a finite loss");
//!     println!("step {}: loss {:.4}, rewards/margins {:+.4}", trainer.steps_done(), metrics["loss"], metrics["rewards/margins"]);
//! }
//! let folder = trainer.export()?; // a Hugging Face model folder: config, safetensors, tokenizer
//! assert!(folder.join("model.safetensors").exists());
//! # Ok(())
//! # }
//! ```

// Every public item is documented: the compiler holds the line (and CI makes warnings errors).
#![warn(missing_docs)]

pub mod artifacts;
pub mod bench;
pub mod cli;
pub mod data;
pub mod demo;
pub mod device;
pub mod distributed;
pub mod eval;
pub mod gold;
pub mod lab;
pub mod losses;
pub mod model;
pub mod online;
pub mod scores;
pub mod text;
pub mod train;

pub use data::{DataConfig, GroupStore, Role};
pub use losses::{LossConfig, LossTerm, Metrics, ScoreBatch};
pub use model::load::{LoadedModel, load_model};
pub use model::{CausalLm, ModelConfig};
pub use scores::Scorer;
pub use train::{RunOptions, TrainConfig, TrainSummary, Trainer, train, training_device};
