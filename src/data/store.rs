//! [`GroupStore`]: tokenised groups — each prompt's ids once, its candidates' response ids, roles,
//! scores and lengths — in flat arrays.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{ChatTemplateUse, DataConfig, OverLength, PromptTruncation, TruncationConfig};
use super::error::{Problem, RowError, RowLoc, RowPos};
use super::group::PreferenceGroup;
use super::load::read_groups;
use super::report::DataReport;
use super::shape::Prompt;
use crate::text::{Boundary, EncodedPrompt, TextCodec};

/// The file name of groups that come from memory, not from a file.
const MEMORY: &str = "<memory>";

/// A candidate's part in its group's loss: in the store, in a batch and as a column of the losses'
/// score matrix (`epa::losses::Role` is this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The preferred response y⁺ (column 0, index 0 of the group's softmax).
    Positive,
    /// A rejected response to the same prompt (TRL's "rejected").
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

/// One already tokenised group, for [`GroupStore::from_tokens`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenGroup {
    /// Prompt token ids exactly as scored (chat template and BOS, if any, included).
    pub prompt_ids: Vec<u32>,
    /// The preferred response ([`Role::Positive`]).
    pub positive: TokenCandidate,
    /// Rejected responses to the same prompt ([`Role::Strong`]).
    pub strong: Vec<TokenCandidate>,
}

/// A tokenised response of a [`TokenGroup`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenCandidate {
    /// Response ids as scored after the prompt (end-of-turn tokens included).
    pub ids: Vec<u32>,
    /// Its score from the data (higher is better), if any.
    pub score: Option<f32>,
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
        let mut builder = StoreBuilder::new(&cfg.truncation, cfg.chat_template, codec);
        let mut report = DataReport::default();
        read_groups(cfg, &mut report, |loc, g, report| {
            builder.push(loc, g, report);
            Ok(())
        })?;
        let store = builder.finish(&mut report);
        Ok((store, report))
    }

    /// Tokenises in-memory groups (locations are their indices under the file name `<memory>`) with
    /// `cfg`'s truncation and chat-template rules.
    pub fn from_groups<'g>(
        groups: impl IntoIterator<Item = &'g PreferenceGroup>,
        cfg: &DataConfig,
        codec: &TextCodec,
    ) -> (GroupStore, DataReport) {
        let mut builder = StoreBuilder::new(&cfg.truncation, cfg.chat_template, codec);
        let mut report = DataReport::default();
        let file: Arc<str> = MEMORY.into();
        for (i, g) in groups.into_iter().enumerate() {
            report.rows_read += 1;
            let loc = RowLoc { file: file.clone(), pos: RowPos::Element(i) };
            builder.push(loc, g.clone(), &mut report);
        }
        let store = builder.finish(&mut report);
        (store, report)
    }

    /// A store of groups that are already tokenised (no tokenizer, no truncation rules, no
    /// `max_length`): locations are their indices under the file name `<memory>`; groups with equal
    /// prompt ids share a prompt key.
    pub fn from_tokens(groups: impl IntoIterator<Item = TokenGroup>) -> GroupStore {
        let mut store = GroupStore { files: vec![MEMORY.to_owned()], ..Default::default() };
        let mut keys = HashMap::<Vec<u32>, u32>::new();
        for (i, g) in groups.into_iter().enumerate() {
            let next_key = keys.len() as u32;
            let key = *keys.entry(g.prompt_ids.clone()).or_insert(next_key);
            let candidates = std::iter::once((g.positive, Role::Positive))
                .chain(g.strong.into_iter().map(|c| (c, Role::Strong)))
                .map(|(c, role)| (c.ids, c.score, role));
            store.push_group(&g.prompt_ids, candidates, key, 0, RowPos::Element(i));
        }
        store
    }

    /// Appends a group: its prompt ids, then its candidates (positive first).
    fn push_group(
        &mut self,
        prompt: &[u32],
        candidates: impl IntoIterator<Item = KeptCandidate>,
        key: u32,
        file: u32,
        pos: RowPos,
    ) {
        let group = self.groups.len() as u32;
        let prompt = self.push_tokens(prompt);
        let first = self.candidates.len() as u32;
        for (ids, score, role) in candidates {
            let ids = self.push_tokens(&ids);
            self.candidates.push(CandidateEntry { ids, group, role, score });
        }
        let count = self.candidates.len() as u32 - first;
        self.groups.push(GroupEntry { prompt, first, count, key, file, pos });
    }

    fn push_tokens(&mut self, ids: &[u32]) -> Span {
        let start = self.tokens.len() as u64;
        self.tokens.extend_from_slice(ids);
        Span { start, len: ids.len() as u32 }
    }

    /// Number of groups (prompts).
    pub fn len(&self) -> usize {
        self.groups.len()
    }
    /// Whether the store holds no group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
    /// Number of candidates (positives and strong negatives) of all groups.
    pub fn num_candidates(&self) -> usize {
        self.candidates.len()
    }
    /// The `max_length` the store was built with (weak negatives must respect it too).
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }
    /// The longest sequence a batch can hold, and the row it comes from: a group's prompt with its
    /// longest candidate, or (`weak`: responses scored under other prompts) the longest prompt with the
    /// longest candidate, capped by `max_length` (weak negatives must fit it).
    pub fn longest_sequence(&self, weak: bool) -> (usize, Option<RowLoc>) {
        let own = self.groups().map(|g| (g.max_len(), g.index())).max();
        let mut out = own.map(|(n, g)| (n, Some(self.group(g).source()))).unwrap_or((0, None));
        if weak {
            let p = self.groups().map(|g| g.prompt_ids().len()).max().unwrap_or(0);
            let c = self.candidates().map(|c| c.ids().len()).max().unwrap_or(0);
            let n = self.max_length().map_or(p + c, |m| m.min(p + c));
            if n > out.0 {
                out = (n, None);
            }
        }
        out
    }

    /// The group at `index`; panics when out of range.
    pub fn group(&self, index: usize) -> GroupRef<'_> {
        assert!(index < self.groups.len(), "group {index} out of range ({} groups)", self.groups.len());
        GroupRef { store: self, index }
    }
    /// The candidate at store-wide `index`; panics when out of range.
    pub fn candidate(&self, index: usize) -> CandidateRef<'_> {
        assert!(index < self.candidates.len(), "candidate {index} out of range");
        CandidateRef { store: self, index }
    }
    /// Every group, in store order.
    pub fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        (0..self.len()).map(|i| self.group(i))
    }
    /// Every candidate, in store order (group by group, each positive first).
    pub fn candidates(&self) -> impl Iterator<Item = CandidateRef<'_>> {
        (0..self.candidates.len()).map(|i| self.candidate(i))
    }

    fn slice(&self, s: Span) -> &[u32] {
        &self.tokens[s.start as usize..s.start as usize + s.len as usize]
    }
}

impl<'a> GroupRef<'a> {
    /// The group's index in the store.
    pub fn index(&self) -> usize {
        self.index
    }
    fn entry(&self) -> &'a GroupEntry {
        &self.store.groups[self.index]
    }
    /// The prompt's token ids (after truncation), shared by all its candidates.
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
    /// Its candidates: the positive, then the strong negatives.
    pub fn candidates(&self) -> impl Iterator<Item = CandidateRef<'a>> + use<'a> {
        let store = self.store;
        self.candidate_indices().map(move |i| store.candidate(i))
    }
    /// Its positive.
    pub fn positive(&self) -> CandidateRef<'a> {
        self.store.candidate(self.entry().first as usize)
    }
    /// Its strong negatives.
    pub fn strong(&self) -> impl Iterator<Item = CandidateRef<'a>> + use<'a> {
        self.candidates().skip(1)
    }
    /// Number of its strong negatives.
    pub fn num_strong(&self) -> usize {
        self.entry().count as usize - 1
    }
    /// Prompt length + the longest candidate: the padded length of this group's rows.
    pub fn max_len(&self) -> usize {
        self.prompt_ids().len() + self.candidates().map(|c| c.ids().len()).max().unwrap_or(0)
    }
    /// Where the group came from: file, and line, element or row.
    pub fn source(&self) -> RowLoc {
        let e = self.entry();
        RowLoc { file: self.store.files[e.file as usize].as_str().into(), pos: e.pos }
    }
}

impl<'a> CandidateRef<'a> {
    /// The candidate's index in the store.
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
    /// `Positive` or `Strong` (weak negatives are drawn per batch, never stored).
    pub fn role(&self) -> Role {
        self.entry().role
    }
    /// Its score from the data (higher is better), if any.
    pub fn score(&self) -> Option<f32> {
        self.entry().score
    }
    /// The group this response was written for.
    pub fn group(&self) -> usize {
        self.entry().group as usize
    }
}

/// One group tokenised and checked against the truncation rules, not yet in the store. Computed in
/// parallel, applied in order (so the store and report do not depend on the thread count).
struct Encoded {
    loc: RowLoc,
    key: String,
    prompt_truncated: bool,
    /// Responses cut to fit `max_length` (`over_length = "keep_start"`).
    responses_truncated: usize,
    /// The chat template rendered the prompt.
    templated: bool,
    text_splits: usize,
    candidate_drops: Vec<RowError>,
    outcome: Result<(Vec<u32>, Vec<KeptCandidate>), RowError>,
}

/// Response ids, score and role of a candidate that passed the rules.
type KeptCandidate = (Vec<u32>, Option<f32>, Role);

/// How many groups are tokenised in parallel at a time.
const CHUNK: usize = 512;

/// Cuts a prompt longer than `max_prompt_length` (`Some(None)` when the rule is to drop it); `None`
/// when it fits.
fn truncate_prompt(trunc: &TruncationConfig, ids: &[u32], bos: Option<u32>) -> Option<Option<Vec<u32>>> {
    let max = trunc.max_prompt_length?;
    if ids.len() <= max {
        return None;
    }
    Some(match trunc.prompt {
        PromptTruncation::Drop => None,
        PromptTruncation::KeepStart => Some(ids[..max].to_vec()),
        PromptTruncation::KeepEnd => {
            let keep_bos = bos.is_some() && ids.first() == bos.as_ref() && max > 1;
            let tail = &ids[ids.len() - (max - usize::from(keep_bos))..];
            Some(if keep_bos { [&ids[..1], tail].concat() } else { tail.to_vec() })
        }
    })
}

/// Tokenises a prompt under `data.chat_template`: TRL's rule by default (message lists through the
/// chat template, plain strings verbatim). The outer error is the data's fault (a message list under
/// `never`), the inner one the template's or tokenizer's.
pub fn encode_prompt(
    codec: &TextCodec,
    prompt: &Prompt,
    template: ChatTemplateUse,
) -> Result<Result<EncodedPrompt>, String> {
    Ok(match (prompt, template) {
        (Prompt::Text(t), ChatTemplateUse::Auto | ChatTemplateUse::Never) => codec.encode_text_prompt(t),
        (Prompt::Messages(_), ChatTemplateUse::Never) => {
            return Err(
                "the prompt is a message list, which needs the chat template, but data.chat_template = \"never\""
                    .into(),
            );
        }
        (p, _) => codec.encode_prompt(&p.messages()),
    })
}

/// Tokenises one group and applies the truncation rules.
fn encode_group(
    trunc: &TruncationConfig,
    template: ChatTemplateUse,
    loc: &RowLoc,
    g: &PreferenceGroup,
    codec: &TextCodec,
) -> Encoded {
    let mut enc = Encoded {
        loc: loc.clone(),
        key: g.prompt.key(),
        prompt_truncated: false,
        responses_truncated: 0,
        templated: false,
        text_splits: 0,
        candidate_drops: Vec::new(),
        outcome: Err(RowError { loc: loc.clone(), field: None, problem: Problem::NoStrongFits }),
    };
    let row_err =
        |problem, field: Option<&str>| RowError { loc: loc.clone(), field: field.map(str::to_owned), problem };
    let prompt = match encode_prompt(codec, &g.prompt, template) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            enc.outcome = Err(row_err(Problem::Template(format!("{e:#}")), Some("prompt")));
            return enc;
        }
        Err(why) => {
            enc.outcome = Err(row_err(Problem::Invalid(why), Some("prompt")));
            return enc;
        }
    };
    enc.templated = prompt.templated;
    let prompt_ids = match truncate_prompt(trunc, &prompt.ids, codec.bos_token_id()) {
        None => prompt.ids.clone(),
        Some(cut) => {
            enc.prompt_truncated = true;
            match cut {
                Some(ids) => ids,
                None => {
                    enc.outcome = Err(row_err(Problem::PromptTooLong, Some("prompt")));
                    return enc;
                }
            }
        }
    };
    if prompt_ids.is_empty() {
        // Nothing to condition on (e.g. max_prompt_length = 0 and no template): not a usable pair.
        enc.outcome = Err(row_err(Problem::EmptyPrompt, Some("prompt")));
        return enc;
    }
    let keep_start = trunc.over_length == OverLength::KeepStart;
    if keep_start && trunc.max_length.is_some_and(|m| prompt_ids.len() >= m) {
        // TRL drops these too: cut to max_length, no response token would be left.
        enc.outcome = Err(row_err(Problem::PromptFillsMaxLength, Some("prompt")));
        return enc;
    }
    let mut kept = Vec::new();
    let all = std::iter::once((&g.positive, Role::Positive, "positive".to_owned()))
        .chain(g.strong.iter().enumerate().map(|(i, c)| (c, Role::Strong, format!("strong[{i}]"))));
    for (cand, role, name) in all {
        let problem = match codec.encode_response(&prompt, &cand.text) {
            Err(e) => Some(Problem::Template(format!("{e:#}"))),
            Ok(pair) => {
                enc.text_splits += usize::from(pair.boundary == Boundary::TextSplit);
                if pair.boundary == Boundary::TextSplit && trunc.drop_boundary_mismatch {
                    Some(Problem::BoundaryMismatch)
                } else if let Some(m) = trunc.max_length.filter(|&m| prompt_ids.len() + pair.response_ids.len() > m) {
                    if keep_start {
                        let mut ids = pair.response_ids;
                        ids.truncate(m - prompt_ids.len());
                        enc.responses_truncated += 1;
                        kept.push((ids, cand.score, role));
                        None
                    } else {
                        Some(Problem::TooLong)
                    }
                } else {
                    kept.push((pair.response_ids, cand.score, role));
                    None
                }
            }
        };
        if let Some(p) = problem {
            if role == Role::Positive {
                let p = if p == Problem::TooLong { Problem::PositiveTooLong } else { p };
                enc.outcome = Err(row_err(p, Some(&name)));
                return enc;
            }
            enc.candidate_drops.push(row_err(p, Some(&name)));
        }
    }
    if kept.len() >= 2 {
        enc.outcome = Ok((prompt_ids, kept));
    }
    enc
}

/// Tokenises groups (in parallel chunks) into a store, applying the truncation rules.
struct StoreBuilder<'c> {
    store: GroupStore,
    trunc: &'c TruncationConfig,
    template: ChatTemplateUse,
    codec: &'c TextCodec,
    pending: Vec<(RowLoc, PreferenceGroup)>,
    keys: HashMap<String, u32>,
    files: HashMap<String, u32>,
}

impl<'c> StoreBuilder<'c> {
    fn new(trunc: &'c TruncationConfig, template: ChatTemplateUse, codec: &'c TextCodec) -> Self {
        let store = GroupStore { max_length: trunc.max_length, ..Default::default() };
        Self { store, trunc, template, codec, pending: Vec::new(), keys: HashMap::new(), files: HashMap::new() }
    }

    fn push(&mut self, loc: RowLoc, g: PreferenceGroup, report: &mut DataReport) {
        self.pending.push((loc, g));
        if self.pending.len() >= CHUNK {
            self.flush(report);
        }
    }

    fn finish(mut self, report: &mut DataReport) -> GroupStore {
        self.flush(report);
        self.store
    }

    fn flush(&mut self, report: &mut DataReport) {
        let (trunc, template, codec) = (self.trunc, self.template, self.codec);
        let encoded: Vec<Encoded> =
            self.pending.par_iter().map(|(loc, g)| encode_group(trunc, template, loc, g, codec)).collect();
        self.pending.clear();
        for enc in encoded {
            self.apply(enc, report);
        }
    }

    fn apply(&mut self, enc: Encoded, report: &mut DataReport) {
        report.prompts_truncated += usize::from(enc.prompt_truncated);
        report.responses_truncated += enc.responses_truncated;
        report.boundary_text_splits += enc.text_splits;
        for d in &enc.candidate_drops {
            report.drop_candidate(d);
        }
        match enc.outcome {
            Err(e) => report.drop_row(&e),
            Ok((prompt, kept)) => {
                report.templated_prompts += usize::from(enc.templated);
                self.append(&enc.loc, &enc.key, prompt, kept, report)
            }
        }
    }

    fn append(&mut self, loc: &RowLoc, key: &str, prompt: Vec<u32>, kept: Vec<KeptCandidate>, report: &mut DataReport) {
        let s = &mut self.store;
        let next_key = self.keys.len() as u32;
        let key = *self.keys.entry(key.to_owned()).or_insert(next_key);
        let next_file = self.files.len() as u32;
        let file = *self.files.entry(loc.file.to_string()).or_insert_with(|| {
            s.files.push(loc.file.to_string());
            next_file
        });
        report.prompt_lengths.push(prompt.len() as u32);
        let count = kept.len() as u32;
        for (ids, _, _) in &kept {
            report.response_lengths.push(ids.len() as u32);
            report.sequence_lengths.push((prompt.len() + ids.len()) as u32);
        }
        s.push_group(&prompt, kept, key, file, loc.pos);
        report.groups += 1;
        report.candidates += count as usize;
        *report.strong_per_group.entry(count as usize - 1).or_default() += 1;
    }
}
