//! Where a row came from and what was wrong with it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A row's position: file plus line (JSONL, 1-based), element (JSON array, 0-based) or row (Parquet,
/// 0-based, as `dataset[i]` counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLoc {
    /// The file's path as given (`<memory>` for groups built from memory).
    pub file: Arc<str>,
    /// The row's position inside the file.
    pub pos: RowPos,
}

/// A row's position inside its file; the variant follows the file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowPos {
    /// JSON Lines: the 1-based line number.
    Line(usize),
    /// JSON array (and in-memory groups): the 0-based element index.
    Element(usize),
    /// Parquet: the 0-based row index.
    Row(usize),
}

impl fmt::Display for RowPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowPos::Line(n) => write!(f, "line {n}"),
            RowPos::Element(n) => write!(f, "element {n}"),
            RowPos::Row(n) => write!(f, "row {n}"),
        }
    }
}

impl fmt::Display for RowLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.pos)
    }
}

/// What is wrong with a row (or a candidate). `key()` is the stable name used in reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A JSON Lines line that does not parse; holds serde_json's message.
    BadJson(String),
    /// A JSON Lines line that is not valid UTF-8.
    NotUtf8 {
        /// Offset, within the line, of the first invalid byte.
        byte: usize,
    },
    /// A JSON Lines line over `max_line_bytes` (skipped without being held in memory).
    LineTooLong {
        /// The line's length, in bytes.
        bytes: usize,
        /// The `max_line_bytes` in force.
        limit: usize,
    },
    /// A row (JSON line or array element) that is not a JSON object; holds the JSON type found.
    NotAnObject(&'static str),
    /// A required field (named in the [`RowError`]) is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType {
        /// What the field should be (`a string`, `a list of messages`, …).
        expected: &'static str,
        /// The JSON type it has (`a number`, `null`, …).
        found: &'static str,
    },
    /// A response is empty or only whitespace (or an empty message list); in a multi-response row
    /// only that response is dropped.
    EmptyResponse,
    /// The prompt has no text (its non-system turns are empty), or no token is left of it after
    /// truncation.
    EmptyPrompt,
    /// Malformed in a way the message explains: e.g. a conversation that does not end with an
    /// assistant turn, a score count that differs from the response count, a message-list prompt
    /// under `chat_template = "never"`.
    Invalid(String),
    /// The chat template or the tokenizer failed on the row; holds its error (a template's
    /// `raise_exception` text among them).
    Template(String),
    /// A multi-response response without a usable score (missing, null, `"N/A"`); that response is
    /// dropped.
    Unscored,
    /// A negative scored equal to the positive, dropped under `ties = "drop"`.
    Tie,
    /// A negative scored less than `min_score_gap` below the positive, dropped.
    ScoreGap,
    /// No negative is left after the score rules (or the row had fewer than two scored responses):
    /// the row is dropped.
    NoNegatives,
    /// The prompt is longer than `max_prompt_length` under `prompt = "drop"`: the row is dropped.
    PromptTooLong,
    /// The prompt alone has `max_length` tokens or more (`over_length = "keep_start"` would cut every
    /// response token).
    PromptFillsMaxLength,
    /// A strong negative's prompt + response is longer than `max_length` under
    /// `over_length = "drop"`: that response is dropped.
    TooLong,
    /// The positive's prompt + response is longer than `max_length` under `over_length = "drop"`:
    /// the row is dropped.
    PositiveTooLong,
    /// No strong negative is left after tokenising and the length rules: the row is dropped.
    NoStrongFits,
    /// The prompt's ids are not a prefix of the prompt + response ids (see `Boundary::TextSplit`)
    /// and `drop_boundary_mismatch` is set: the response (for the positive, the row) is dropped.
    BoundaryMismatch,
    /// The row's fields fit no shape, or another shape than the file's (decided by its first row).
    Shape(String),
}

impl Problem {
    /// The problem's stable name, without details: the key its count is filed under in the data report.
    pub fn key(&self) -> &'static str {
        match self {
            Problem::BadJson(_) => "bad JSON",
            Problem::NotUtf8 { .. } => "not UTF-8",
            Problem::LineTooLong { .. } => "line too long",
            Problem::NotAnObject(_) => "not a JSON object",
            Problem::MissingField => "missing field",
            Problem::WrongType { .. } => "wrong type",
            Problem::EmptyResponse => "empty response",
            Problem::EmptyPrompt => "empty prompt",
            Problem::Invalid(_) => "invalid row",
            Problem::Template(_) => "chat template error",
            Problem::Unscored => "response without a score",
            Problem::Tie => "tied with the positive",
            Problem::ScoreGap => "score gap below min_score_gap",
            Problem::NoNegatives => "no negative left after score filtering",
            Problem::PromptTooLong => "prompt longer than max_prompt_length",
            Problem::PromptFillsMaxLength => "prompt alone fills max_length",
            Problem::TooLong => "prompt + response longer than max_length",
            Problem::PositiveTooLong => "positive longer than max_length",
            Problem::NoStrongFits => "no strong negative fits max_length",
            Problem::BoundaryMismatch => "prompt ids not a prefix of prompt+response ids",
            Problem::Shape(_) => "row shape differs from the file's",
        }
    }

    /// Malformed input (as opposed to a row filtered by a rule): `on_bad_row = "fail"` stops on these.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Problem::BadJson(_)
                | Problem::NotUtf8 { .. }
                | Problem::LineTooLong { .. }
                | Problem::NotAnObject(_)
                | Problem::MissingField
                | Problem::WrongType { .. }
                | Problem::EmptyResponse
                | Problem::EmptyPrompt
                | Problem::Invalid(_)
                | Problem::Shape(_)
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadJson(m) => write!(f, "bad JSON: {m}"),
            Problem::NotUtf8 { byte } => write!(f, "not valid UTF-8 (byte {byte} of the line)"),
            Problem::LineTooLong { bytes, limit } => {
                write!(f, "line is {bytes} bytes, over the {limit}-byte limit (max_line_bytes)")
            }
            Problem::NotAnObject(found) => write!(f, "expected a JSON object, found {found}"),
            Problem::MissingField => write!(f, "missing field"),
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Problem::Invalid(m) | Problem::Template(m) | Problem::Shape(m) => write!(f, "{m}"),
            other => write!(f, "{}", other.key()),
        }
    }
}

/// A problem at a location, optionally in a named field (`chosen`, `completions[2].response`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// Where the row is.
    pub loc: RowLoc,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{}`: {}", self.loc, field, self.problem),
            None => write!(f, "{}: {}", self.loc, self.problem),
        }
    }
}

impl std::error::Error for RowError {}

/// A problem found while parsing a row's value, before the location is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field at fault (its path inside the row), if one is.
    pub field: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl FieldError {
    /// A problem in `field`.
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self { field: Some(field.into()), problem }
    }
    /// Attaches the row's location, making it a [`RowError`].
    pub fn at(self, loc: &RowLoc) -> RowError {
        RowError { loc: loc.clone(), field: self.field, problem: self.problem }
    }
}

/// JSON type names for error messages.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}
