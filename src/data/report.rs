//! [`DataReport`]: what reading and tokenising a dataset kept, dropped and why.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::config::{Format, ShapeKind};
use super::error::RowError;

/// How many problem messages (with locations) a report keeps verbatim.
pub const MAX_PROBLEM_MESSAGES: usize = 20;

/// What was read from one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    /// The file's path.
    pub path: String,
    /// Its format, as resolved (never `auto`).
    pub format: Format,
    /// The shape its rows were read as (`auto` only if no row fitted any).
    pub shape: ShapeKind,
    /// Rows read from it, malformed ones included.
    pub rows: usize,
}

/// What reading, grouping and tokenising a dataset kept, dropped and why; [`DataReport::summary`]
/// renders it for logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataReport {
    /// One summary per file read, in order.
    pub files: Vec<FileSummary>,
    /// Rows seen (including malformed ones).
    pub rows_read: usize,
    /// Rows whose prompt or responses were message lists.
    pub conversational_rows: usize,
    /// Groups kept.
    pub groups: usize,
    /// Positives + strong negatives kept.
    pub candidates: usize,
    /// Number of strong negatives → number of groups.
    pub strong_per_group: BTreeMap<usize, usize>,
    /// Whole rows dropped, by reason.
    pub dropped_rows: BTreeMap<String, usize>,
    /// Single responses dropped (the row kept), by reason.
    pub dropped_candidates: BTreeMap<String, usize>,
    /// Prompts longer than `max_prompt_length` (cut, or dropped under `prompt = "drop"`).
    pub prompts_truncated: usize,
    /// Responses cut to fit `max_length` (`truncation.over_length = "keep_start"`).
    pub responses_truncated: usize,
    /// Groups whose prompt went through the chat template (see `data.chat_template`); the others were
    /// tokenised verbatim.
    pub templated_prompts: usize,
    /// Pairs whose response had to be tokenised apart from the prompt (see `Boundary::TextSplit`).
    pub boundary_text_splits: usize,
    /// The first problems, each naming file, line/row and field.
    pub problems: Vec<String>,
    /// Token (or, without a tokenizer, character) lengths of kept prompts and responses.
    #[serde(skip)]
    pub prompt_lengths: Vec<u32>,
    /// Token (or, without a tokenizer, character) lengths of kept responses.
    #[serde(skip)]
    pub response_lengths: Vec<u32>,
    /// prompt + response, per kept candidate: what `max_length` bounds.
    #[serde(skip)]
    pub sequence_lengths: Vec<u32>,
}

impl DataReport {
    fn note(&mut self, e: &RowError) {
        if self.problems.len() < MAX_PROBLEM_MESSAGES {
            self.problems.push(e.to_string());
        }
    }

    /// Counts a dropped row under its problem's key (and keeps its message if there is room).
    pub fn drop_row(&mut self, e: &RowError) {
        *self.dropped_rows.entry(e.problem.key().to_owned()).or_default() += 1;
        self.note(e);
    }

    /// Counts a dropped response, its row kept, under its problem's key (and keeps its message if
    /// there is room).
    pub fn drop_candidate(&mut self, e: &RowError) {
        *self.dropped_candidates.entry(e.problem.key().to_owned()).or_default() += 1;
        self.note(e);
    }

    /// Rows dropped, all reasons together.
    pub fn rows_dropped(&self) -> usize {
        self.dropped_rows.values().sum()
    }

    /// A few lines for logs.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for f in &self.files {
            let _ = writeln!(s, "{}: {:?}, shape {:?}, {} rows", f.path, f.format, f.shape, f.rows);
        }
        let _ = writeln!(
            s,
            "rows {} ({} conversational) → groups {} with {} candidates; rows dropped {}",
            self.rows_read,
            self.conversational_rows,
            self.groups,
            self.candidates,
            self.rows_dropped()
        );
        if self.groups > 0 {
            let _ = writeln!(
                s,
                "prompts through the chat template: {} of {} (the rest tokenised verbatim; see data.chat_template)",
                self.templated_prompts, self.groups
            );
        }
        let strong: Vec<String> = self.strong_per_group.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(s, "strong negatives per group: {{{}}}", strong.join(", "));
        for (title, map) in [("dropped rows", &self.dropped_rows), ("dropped responses", &self.dropped_candidates)] {
            for (k, v) in map {
                let _ = writeln!(s, "{title}: {k}: {v}");
            }
        }
        // The first problems in full (a chat template's own `raise_exception` text among them).
        for p in self.problems.iter().take(3) {
            let _ = writeln!(s, "  e.g. {p}");
        }
        if self.prompts_truncated > 0 {
            let _ = writeln!(s, "prompts truncated: {}", self.prompts_truncated);
        }
        if self.responses_truncated > 0 {
            let _ = writeln!(s, "responses cut to max_length (over_length = keep_start): {}", self.responses_truncated);
        }
        if self.boundary_text_splits > 0 {
            let _ = writeln!(s, "prompt/response token boundary re-split: {}", self.boundary_text_splits);
        }
        s
    }
}
