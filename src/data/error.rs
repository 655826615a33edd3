//! Where a row came from and what was wrong with it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A row's position: file plus line (JSONL, 1-based), element (JSON array, 0-based) or row (Parquet,
/// 0-based, as `dataset[i]` counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLoc {
    pub file: Arc<str>,
    pub pos: RowPos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowPos {
    Line(usize),
    Element(usize),
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
    BadJson(String),
    NotUtf8 {
        byte: usize,
    },
    LineTooLong {
        bytes: usize,
        limit: usize,
    },
    NotAnObject(&'static str),
    MissingField,
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    EmptyResponse,
    EmptyPrompt,
    Invalid(String),
    Template(String),
    Unscored,
    Tie,
    ScoreGap,
    NoNegatives,
    PromptTooLong,
    /// The prompt alone has `max_length` tokens or more (`over_length = "keep_start"` would cut every
    /// response token).
    PromptFillsMaxLength,
    TooLong,
    PositiveTooLong,
    NoStrongFits,
    BoundaryMismatch,
    /// The row's fields fit no shape, or another shape than the file's (decided by its first row).
    Shape(String),
}

impl Problem {
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
    pub loc: RowLoc,
    pub field: Option<String>,
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
    pub field: Option<String>,
    pub problem: Problem,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self { field: Some(field.into()), problem }
    }
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
