//! [`GroupStore`]: tokenised groups — each prompt's ids once, its candidates' response ids, roles,
//! scores and lengths — in flat arrays.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::config::{DataConfig, PromptTruncation, TruncationConfig};
use super::error::{Problem, RowError, RowLoc, RowPos};
use super::group::{Candidate, PreferenceGroup};
use super::load::read_groups;
use super::report::DataReport;
use crate::text::{Boundary, TextCodec};

/// A candidate's part in its group's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The preferred response (index 0 of the group's softmax).
    Positive,
    /// A rejected response to the same prompt.
    Strong,
    /// A response written for another prompt, scored under this one.
    Weak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Span {
    start: u64,
    len: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GroupEntry {
    prompt: Span,
    first: u32,
    count: u32,
    key: u32,
    file: u32,
    pos: RowPos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CandidateEntry {
    ids: Span,
    group: u32,
    role: Role,
    score: Option<f32>,
}

/// Tokenised preference groups. Candidates of group `g` are contiguous: the positive first, then its
/// strong negatives. Weak negatives are not stored per group; the [`super::Batcher`] draws them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStore {
    tokens: Vec<u32>,
    groups: Vec<GroupEntry>,
    candidates: Vec<CandidateEntry>,
    files: Vec<String>,
    max_length: Option<usize>,
}

/// A borrowed group.
#[derive(Clone, Copy)]
pub struct GroupRef<'a> {
    store: &'a GroupStore,
    index: usize,
}

/// A borrowed candidate.
#[derive(Clone, Copy)]
pub struct CandidateRef<'a> {
    store: &'a GroupStore,
    index: usize,
}

impl GroupStore {
    /// Reads, groups and tokenises every file of `cfg`. Malformed rows fail the build (naming file,
    /// line/row and field) unless `cfg.on_bad_row = "skip"`; rows removed by rules are counted in the
    /// report.
    pub fn build(cfg: &DataConfig, codec: &TextCodec) -> Result<(GroupStore, DataReport)> {
        let mut builder = StoreBuilder::new(&cfg.truncation);
        let mut report = DataReport::default();
        read_groups(cfg, &mut report, |loc, g, report| {
            builder.push(&loc, &g, codec, report);
            Ok(())
        })?;
        Ok((builder.finish(), report))
    }

    /// Tokenises in-memory groups (locations are their indices under the file name `<memory>`).
    pub fn from_groups<'g>(
        groups: impl IntoIterator<Item = &'g PreferenceGroup>,
        trunc: &TruncationConfig,
        codec: &TextCodec,
    ) -> (GroupStore, DataReport) {
        let mut builder = StoreBuilder::new(trunc);
        let mut report = DataReport::default();
        let file: Arc<str> = "<memory>".into();
        for (i, g) in groups.into_iter().enumerate() {
            report.rows_read += 1;
            builder.push(
                &RowLoc {
                    file: file.clone(),
                    pos: RowPos::Element(i),
                },
                g,
                codec,
                &mut report,
            );
        }
        (builder.finish(), report)
    }

    /// Number of groups (prompts).
    pub fn len(&self) -> usize {
        self.groups.len()
    }
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
    pub fn num_candidates(&self) -> usize {
        self.candidates.len()
    }
    /// The `max_length` the store was built with (weak negatives must respect it too).
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }
    pub fn group(&self, index: usize) -> GroupRef<'_> {
        assert!(
            index < self.groups.len(),
            "group {index} out of range ({} groups)",
            self.groups.len()
        );
        GroupRef { store: self, index }
    }
    pub fn candidate(&self, index: usize) -> CandidateRef<'_> {
        assert!(
            index < self.candidates.len(),
            "candidate {index} out of range"
        );
        CandidateRef { store: self, index }
    }
    pub fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        (0..self.len()).map(|i| self.group(i))
    }
    pub fn candidates(&self) -> impl Iterator<Item = CandidateRef<'_>> {
        (0..self.candidates.len()).map(|i| self.candidate(i))
    }

    fn slice(&self, s: Span) -> &[u32] {
        &self.tokens[s.start as usize..s.start as usize + s.len as usize]
    }
}

impl<'a> GroupRef<'a> {
    pub fn index(&self) -> usize {
        self.index
    }
    fn entry(&self) -> &'a GroupEntry {
        &self.store.groups[self.index]
    }
    pub fn prompt_ids(&self) -> &'a [u32] {
        self.store.slice(self.entry().prompt)
    }
    /// Groups with equal keys have the same prompt text (see `Prompt::key`).
    pub fn prompt_key(&self) -> u32 {
        self.entry().key
    }
    /// Indices (into the store) of this group's candidates: positive first, then strong negatives.
    pub fn candidate_indices(&self) -> std::ops::Range<usize> {
        let e = self.entry();
        e.first as usize..(e.first + e.count) as usize
    }
    pub fn candidates(&self) -> impl Iterator<Item = CandidateRef<'a>> + use<'a> {
        let store = self.store;
        self.candidate_indices().map(move |i| store.candidate(i))
    }
    pub fn positive(&self) -> CandidateRef<'a> {
        self.store.candidate(self.entry().first as usize)
    }
    pub fn strong(&self) -> impl Iterator<Item = CandidateRef<'a>> + use<'a> {
        self.candidates().skip(1)
    }
    pub fn num_strong(&self) -> usize {
        self.entry().count as usize - 1
    }
    /// Prompt length + the longest candidate: the padded length of this group's rows.
    pub fn max_len(&self) -> usize {
        self.prompt_ids().len() + self.candidates().map(|c| c.ids().len()).max().unwrap_or(0)
    }
    pub fn source(&self) -> RowLoc {
        let e = self.entry();
        RowLoc {
            file: self.store.files[e.file as usize].as_str().into(),
            pos: e.pos,
        }
    }
}

impl<'a> CandidateRef<'a> {
    pub fn index(&self) -> usize {
        self.index
    }
    fn entry(&self) -> &'a CandidateEntry {
        &self.store.candidates[self.index]
    }
    /// Response ids (ending with the template's end-of-turn tokens).
    pub fn ids(&self) -> &'a [u32] {
        self.store.slice(self.entry().ids)
    }
    pub fn role(&self) -> Role {
        self.entry().role
    }
    pub fn score(&self) -> Option<f32> {
        self.entry().score
    }
    /// The group this response was written for.
    pub fn group(&self) -> usize {
        self.entry().group as usize
    }
}

/// Tokenises groups one by one into a store, applying the truncation rules.
struct StoreBuilder<'c> {
    store: GroupStore,
    trunc: &'c TruncationConfig,
    keys: HashMap<String, u32>,
    files: HashMap<String, u32>,
}

impl<'c> StoreBuilder<'c> {
    fn new(trunc: &'c TruncationConfig) -> Self {
        let store = GroupStore {
            max_length: trunc.max_length,
            ..Default::default()
        };
        Self {
            store,
            trunc,
            keys: HashMap::new(),
            files: HashMap::new(),
        }
    }

    fn finish(self) -> GroupStore {
        self.store
    }

    /// Cuts a prompt longer than `max_prompt_length`; `None` when the rule is to drop it.
    fn truncate_prompt(
        &self,
        mut ids: Vec<u32>,
        bos: Option<u32>,
        report: &mut DataReport,
    ) -> Option<Vec<u32>> {
        let Some(max) = self.trunc.max_prompt_length else {
            return Some(ids);
        };
        if ids.len() <= max {
            return Some(ids);
        }
        report.prompts_truncated += 1;
        match self.trunc.prompt {
            PromptTruncation::Drop => None,
            PromptTruncation::KeepStart => {
                ids.truncate(max);
                Some(ids)
            }
            PromptTruncation::KeepEnd => {
                let keep_bos = bos.is_some() && ids.first() == bos.as_ref() && max > 1;
                let tail = ids.split_off(ids.len() - (max - usize::from(keep_bos)));
                Some(if keep_bos {
                    [&ids[..1], &tail[..]].concat()
                } else {
                    tail
                })
            }
        }
    }

    fn push(
        &mut self,
        loc: &RowLoc,
        g: &PreferenceGroup,
        codec: &TextCodec,
        report: &mut DataReport,
    ) {
        let row_err = |problem, field: Option<&str>| RowError {
            loc: loc.clone(),
            field: field.map(str::to_owned),
            problem,
        };
        let prompt = match codec.encode_prompt(&g.prompt.messages()) {
            Ok(p) => p,
            Err(e) => {
                return report.drop_row(&row_err(
                    Problem::Template(format!("{e:#}")),
                    Some("prompt"),
                ));
            }
        };
        let Some(prompt_ids) =
            self.truncate_prompt(prompt.ids.clone(), codec.bos_token_id(), report)
        else {
            return report.drop_row(&row_err(Problem::PromptTooLong, Some("prompt")));
        };
        let mut kept: Vec<(Vec<u32>, &Candidate, Role)> = Vec::new();
        let all = std::iter::once((&g.positive, Role::Positive, "positive".to_owned())).chain(
            g.strong
                .iter()
                .enumerate()
                .map(|(i, c)| (c, Role::Strong, format!("strong[{i}]"))),
        );
        for (cand, role, name) in all {
            let problem = match codec.encode_response(&prompt, &cand.text) {
                Err(e) => Some(Problem::Template(format!("{e:#}"))),
                Ok(pair) => {
                    if pair.boundary == Boundary::TextSplit {
                        report.boundary_text_splits += 1;
                    }
                    if pair.boundary == Boundary::TextSplit && self.trunc.drop_boundary_mismatch {
                        Some(Problem::BoundaryMismatch)
                    } else if self
                        .trunc
                        .max_length
                        .is_some_and(|m| prompt_ids.len() + pair.response_ids.len() > m)
                    {
                        Some(Problem::TooLong)
                    } else {
                        kept.push((pair.response_ids, cand, role));
                        None
                    }
                }
            };
            if let Some(p) = problem {
                if role == Role::Positive {
                    let p = if p == Problem::TooLong {
                        Problem::PositiveTooLong
                    } else {
                        p
                    };
                    return report.drop_row(&row_err(p, Some(&name)));
                }
                report.drop_candidate(&row_err(p, Some(&name)));
            }
        }
        if kept.len() < 2 {
            return report.drop_row(&row_err(Problem::NoStrongFits, None));
        }
        self.append(loc, &g.prompt.key(), prompt_ids, kept, report);
    }

    fn append(
        &mut self,
        loc: &RowLoc,
        key: &str,
        prompt: Vec<u32>,
        kept: Vec<(Vec<u32>, &Candidate, Role)>,
        report: &mut DataReport,
    ) {
        let s = &mut self.store;
        let next_key = self.keys.len() as u32;
        let key = *self.keys.entry(key.to_owned()).or_insert(next_key);
        let next_file = self.files.len() as u32;
        let file = *self.files.entry(loc.file.to_string()).or_insert_with(|| {
            s.files.push(loc.file.to_string());
            next_file
        });
        let group = s.groups.len() as u32;
        let span = |tokens: &mut Vec<u32>, ids: &[u32]| {
            let start = tokens.len() as u64;
            tokens.extend_from_slice(ids);
            Span {
                start,
                len: ids.len() as u32,
            }
        };
        report.prompt_lengths.push(prompt.len() as u32);
        let prompt = span(&mut s.tokens, &prompt);
        let first = s.candidates.len() as u32;
        let count = kept.len() as u32;
        for (ids, cand, role) in kept {
            report.response_lengths.push(ids.len() as u32);
            let ids = span(&mut s.tokens, &ids);
            s.candidates.push(CandidateEntry {
                ids,
                group,
                role,
                score: cand.score,
            });
        }
        s.groups.push(GroupEntry {
            prompt,
            first,
            count,
            key,
            file,
            pos: loc.pos,
        });
        report.groups += 1;
        report.candidates += count as usize;
        *report
            .strong_per_group
            .entry(count as usize - 1)
            .or_default() += 1;
    }
}
