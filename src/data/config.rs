//! [`DataConfig`]: where the data is, what shape it has and how it becomes groups, tokens and batches.
//! Every field has a default, so a TOML file names only what differs:
//!
//! ```toml
//! paths = ["ultrafeedback.parquet"]
//! shape = "auto"                    # standard | implicit | conversational | multi_response
//! [fields]
//! completion_score = "fine-grained_score"
//! [grouping]
//! strategy = "best_vs_rest"         # or best_vs_random (binarized)
//! ties = "drop"
//! min_score_gap = 1.0
//! chat_template = "auto"           # always | never
//! [truncation]
//! max_length = 1024
//! over_length = "keep_start"        # or drop
//! max_prompt_length = 512
//! prompt = "keep_end"
//! [weak]
//! k = 2
//! source = "both"
//! scope = "in_batch"
//! [batch]
//! prompts_per_batch = 8
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[data]` section: which files to read and how their rows become tokenised groups and batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Files to read (`.jsonl`, `.json`, `.parquet`); their rows are concatenated in order.
    pub paths: Vec<PathBuf>,
    /// File format of every path; `auto` tells it from each file's extension.
    pub format: Format,
    /// Which fields hold the prompt, responses and scores; `auto` detects it per file (from its
    /// first row, or the Parquet schema).
    pub shape: ShapeKind,
    /// The names of the fields (columns) each shape reads, for datasets that name them differently.
    pub fields: FieldNames,
    /// How a row's labelled or scored responses become one positive and its strong negatives.
    pub grouping: GroupingConfig,
    /// When prompts go through the model's chat template (TRL's rule by default: message lists do,
    /// plain strings are tokenised verbatim).
    pub chat_template: ChatTemplateUse,
    /// Length limits in tokens (TRL's `max_length`, `truncation_mode`) and what happens to rows
    /// beyond them.
    pub truncation: TruncationConfig,
    /// Weak negatives: responses written for other prompts, scored under each prompt.
    pub weak: WeakConfig,
    /// Batching: prompts per batch, shuffling, length bucketing.
    pub batch: BatchConfig,
    /// What a malformed row does: `fail` stops with an error naming file, line and field; `skip` drops
    /// and counts it.
    pub on_bad_row: OnBadRow,
    /// Longest accepted JSONL line, in bytes.
    pub max_line_bytes: usize,
    /// Seed for everything random in the data pipeline (binarising, weak negatives, shuffling).
    pub seed: u64,
    /// Stop after this many rows (all files together); for quick runs.
    pub max_rows: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            format: Format::Auto,
            shape: ShapeKind::Auto,
            fields: FieldNames::default(),
            grouping: GroupingConfig::default(),
            chat_template: ChatTemplateUse::Auto,
            truncation: TruncationConfig::default(),
            weak: WeakConfig::default(),
            batch: BatchConfig::default(),
            on_bad_row: OnBadRow::Fail,
            max_line_bytes: 4 << 20,
            seed: 42,
            max_rows: None,
        }
    }
}

impl DataConfig {
    /// A config reading `path` with every other setting at its default.
    pub fn for_path(path: impl Into<PathBuf>) -> Self {
        Self { paths: vec![path.into()], ..Self::default() }
    }
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// How a data file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// From the extension (`.parquet`, `.jsonl`/`.ndjson`, `.json`); a `.json` file that does not start
    /// with `[` is read as JSON lines.
    Auto,
    /// JSON Lines: one object per line (blank lines skipped); a bad line is a bad row, not a bad file.
    Jsonl,
    /// One JSON array of row objects, parsed whole.
    Json,
    /// Apache Parquet, as Hugging Face Hub datasets are stored; only the columns the shape needs
    /// are read.
    Parquet,
}

/// Which prompts the chat template renders (`data.chat_template`, `epa score --chat-template`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ChatTemplateUse {
    /// As TRL: a message-list prompt goes through the template, a plain-string prompt is tokenised
    /// verbatim (BOS added as the tokenizer's post-processor does; responses end with EOS).
    Auto,
    /// Every prompt goes through the template; a plain string becomes one user message (for data
    /// whose string prompts were meant as chat turns, e.g. sampled from the model with its template).
    Always,
    /// No prompt does: plain strings verbatim; a message-list prompt is a bad row.
    Never,
}

/// What a malformed row (bad JSON, missing field, wrong type, …) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRow {
    /// Stop with an error naming the file, line/row and field.
    Fail,
    /// Drop the row, count it by reason in the data report, and go on.
    Skip,
}

/// The dataset shapes (see [`crate::data::shape`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ShapeKind {
    /// Detected from the first row's fields (or the Parquet schema); a later row whose fields give
    /// another shape is a bad row.
    Auto,
    /// `prompt`, `chosen`, `rejected` (strings or message lists).
    Standard,
    /// `chosen`, `rejected` only: the shared prefix is the prompt.
    Implicit,
    /// A prompt and a list of scored responses: UltraFeedback's `instruction` + `completions`, or
    /// `prompt` + `responses` + `scores`/`ranks`.
    MultiResponse,
}

impl ShapeKind {
    /// The name used in the config (`multi_response`).
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Auto => "auto",
            ShapeKind::Standard => "standard",
            ShapeKind::Implicit => "implicit",
            ShapeKind::MultiResponse => "multi_response",
        }
    }
}

/// Column / key names. Dotted names reach into nested objects (`annotations.helpfulness.Rating`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FieldNames {
    /// The prompt (a string, or a list of chat messages).
    pub prompt: String,
    /// Optional system message prepended to the prompt, if the row has this field.
    pub system: String,
    /// The preferred response (string or messages).
    pub chosen: String,
    /// The rejected response, or a list of them (strong negatives).
    pub rejected: String,
    /// Optional true score of `chosen` (for slope-1 metrics and score-based losses).
    pub score_chosen: String,
    /// Optional true score(s) of `rejected` (one per rejected response).
    pub score_rejected: String,
    /// UltraFeedback raw: the prompt.
    pub instruction: String,
    /// UltraFeedback raw: list of objects holding a response and its scores.
    pub completions: String,
    /// UltraFeedback raw: the response inside each completion.
    pub completion_response: String,
    /// UltraFeedback raw: the score inside each completion (dotted paths allowed).
    pub completion_score: String,
    /// Generic multi-response: list of responses, with `scores` (higher is better) or `ranks` (1 = best).
    pub responses: String,
    /// Generic multi-response: one score per response (higher is better).
    pub scores: String,
    /// Generic multi-response: one rank per response (1 = best), used when `scores` is absent.
    pub ranks: String,
    /// Implicit prompts: when set, the prompt ends right after the last occurrence of this marker inside
    /// the shared prefix (e.g. `"\n\nAssistant:"` for Anthropic HH) instead of at the first difference.
    pub implicit_prompt_delimiter: Option<String>,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            system: "system".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
            score_chosen: "score_chosen".into(),
            score_rejected: "score_rejected".into(),
            instruction: "instruction".into(),
            completions: "completions".into(),
            completion_response: "response".into(),
            completion_score: "overall_score".into(),
            responses: "responses".into(),
            scores: "scores".into(),
            ranks: "ranks".into(),
            implicit_prompt_delimiter: None,
        }
    }
}

/// How scored candidates become a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GroupingConfig {
    /// Which scored responses become the positive and the strong negatives (rows labelled
    /// chosen/rejected keep their labels).
    pub strategy: Strategy,
    /// Whether negatives scored equal to the positive are dropped or kept.
    pub ties: Ties,
    /// A negative must score at least this much below the positive (0: any lower score).
    pub min_score_gap: f32,
    /// Keep at most this many strong negatives per group (the lowest-scored are kept last).
    pub max_strong: Option<usize>,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self { strategy: Strategy::BestVsRest, ties: Ties::Drop, min_score_gap: 0.0, max_strong: None }
    }
}

/// How a row of scored responses becomes a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The best-scored response is the positive, all others are strong negatives (EPA's all-4 data).
    BestVsRest,
    /// The best vs one other drawn at random (how `ultrafeedback_binarized` was made).
    BestVsRandom,
    /// The best vs the worst.
    BestVsWorst,
}

/// What a negative scored equal to the positive does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ties {
    /// A negative scored equal to the positive is dropped (a row left without negatives is dropped).
    Drop,
    /// Ties stay as negatives.
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// Length limits, and what happens to rows beyond them.
pub struct TruncationConfig {
    /// Longest prompt + response, in tokens (TRL's `max_length`, default 1024 as there). What happens
    /// to a longer one is `over_length`.
    pub max_length: Option<usize>,
    /// What a prompt + response longer than `max_length` does.
    pub over_length: OverLength,
    /// Longest prompt, in tokens; longer prompts are cut by `prompt`. TRL has no such limit (the
    /// default here neither).
    pub max_prompt_length: Option<usize>,
    /// How a prompt longer than `max_prompt_length` is cut, or whether its row is dropped.
    pub prompt: PromptTruncation,
    /// Drop groups whose prompt/response ids could not be split cleanly (see `Boundary::TextSplit`)
    /// instead of keeping them with the response tokenised separately.
    pub drop_boundary_mismatch: bool,
}

impl Default for TruncationConfig {
    fn default() -> Self {
        Self {
            max_length: Some(1024),
            over_length: OverLength::KeepStart,
            max_prompt_length: None,
            prompt: PromptTruncation::KeepEnd,
            drop_boundary_mismatch: false,
        }
    }
}

/// What a prompt + response longer than `max_length` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverLength {
    /// TRL's `truncation_mode = "keep_start"`: the sequence is cut to its first `max_length` tokens (the
    /// response loses its end); a group whose prompt alone has `max_length` tokens or more is dropped.
    KeepStart,
    /// The response is dropped (and counted); a group whose positive or every strong negative is
    /// dropped is dropped. Nothing is trained on a cut-off answer.
    Drop,
}

/// What a prompt longer than `max_prompt_length` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptTruncation {
    /// Keep the last `max_prompt_length` tokens (nearest the response); a leading BOS is kept.
    KeepEnd,
    /// Keep the first `max_prompt_length` tokens.
    KeepStart,
    /// Drop rows whose prompt is too long.
    Drop,
}

/// Weak negatives: responses written for other prompts, scored under this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WeakConfig {
    /// How many per prompt (0 disables them).
    pub k: usize,
    /// Which responses of other prompts may serve: their positives, their strong negatives, or both.
    pub source: WeakSource,
    /// Where they are drawn from: the other prompts of the batch, or the whole dataset.
    pub scope: WeakScope,
}

impl Default for WeakConfig {
    fn default() -> Self {
        Self { k: 2, source: WeakSource::Both, scope: WeakScope::InBatch }
    }
}

/// Which responses of other prompts may become weak negatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeakSource {
    /// Other prompts' positives.
    Chosen,
    /// Other prompts' strong negatives.
    Rejected,
    /// Other prompts' positives and strong negatives alike.
    Both,
}

/// Where weak negatives are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeakScope {
    /// From the other prompts of the same batch (no extra prompt encodings beyond the batch's responses).
    InBatch,
    /// From the whole dataset.
    Dataset,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
/// Batching: prompts per batch, shuffling, length bucketing.
pub struct BatchConfig {
    /// P: prompts (groups) per batch.
    pub prompts_per_batch: usize,
    /// Shuffle the groups every epoch (seeded).
    pub shuffle: bool,
    /// Sort groups by length inside windows of this many batches (0 or 1: no bucketing), then shuffle
    /// the batches: padding drops while the order stays random.
    pub bucket_batches: usize,
    /// Drop the last, smaller batch of an epoch.
    pub drop_last: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { prompts_per_batch: 8, shuffle: true, bucket_batches: 50, drop_last: false }
    }
}
