//! Preference data: files → rows → groups → tokens → batches.
//!
//! 1. [`read`]: JSON lines, JSON arrays and Parquet files become rows (JSON objects with a location).
//! 2. [`shape`]: each row is read by its shape — standard, implicit prompt, conversational or
//!    multi-response (UltraFeedback raw, `responses` + `scores`) — with [`FieldNames`] renamable.
//! 3. [`group`]: [`GroupingConfig`] turns it into a [`PreferenceGroup`]: one prompt, one positive, strong
//!    negatives (best vs rest, best vs a random one, ties, minimum score gap).
//! 4. [`store`]: [`GroupStore`] holds the tokenised groups (prompt ids once, response ids per candidate,
//!    roles, scores), after the truncation rules (too-long rows are dropped and counted, not mangled).
//! 5. [`batch`] + [`weak`]: a [`Batcher`] yields seeded, length-bucketed batches of P prompts, each with
//!    K weak negatives (responses to other prompts), resumable from a [`BatcherState`].
//!
//! Every dropped row or response is counted by reason in the [`DataReport`]; malformed rows stop the
//! build with an error naming the file, line/row and field unless `on_bad_row = "skip"`.
//!
//! ```no_run
//! use epa::data::{Batcher, DataConfig, GroupStore, Role};
//! use epa::text::TextCodec;
//!
//! let codec = TextCodec::from_hf_folder("models/SmolLM2-135M-Instruct".as_ref())?;
//! let mut cfg = DataConfig::for_path("ultrafeedback.parquet");
//! cfg.weak.k = 2;
//! cfg.batch.prompts_per_batch = 4;
//! let (store, report) = GroupStore::build(&cfg, &codec)?;
//! eprintln!("{}", report.summary());
//!
//! let mut batcher = Batcher::new(&store, &cfg)?;
//! let batch = batcher.next_batch();
//! for item in batch.items(&store) {
//!     let prompt = store.group(item.group).prompt_ids();
//!     let response = store.candidate(item.candidate).ids();
//!     // score prompt ++ response; item.role is Positive, Strong or Weak
//!     let _ = (prompt, response, item.role == Role::Weak);
//! }
//! let resume_from = batcher.state(); // serialise with the checkpoint; `batcher.restore(state)` later
//! # let _ = resume_from;
//! # anyhow::Ok(())
//! ```

mod arrow_json;
pub mod batch;
pub mod config;
pub mod error;
pub mod group;
pub mod inspect;
pub mod load;
pub mod read;
pub mod report;
pub mod shape;
pub mod store;
pub mod weak;

pub use batch::{Batch, BatchGroup, BatchItem, Batcher, BatcherState};
pub use config::{
    BatchConfig, ChatTemplateUse, DataConfig, FieldNames, Format, GroupingConfig, OnBadRow, OverLength,
    PromptTruncation, ShapeKind, Strategy, Ties, TruncationConfig, WeakConfig, WeakScope, WeakSource,
};
pub use error::{Problem, RowError, RowLoc, RowPos};
pub use group::{Candidate, PreferenceGroup};
pub use load::{load_groups, read_groups};
pub use report::DataReport;
pub use shape::Prompt;
pub use store::{CandidateRef, GroupRef, GroupStore, Role, TokenCandidate, TokenGroup};
pub use weak::WeakSampler;
