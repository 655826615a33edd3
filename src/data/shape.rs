//! Dataset shapes: recognising them and reading one row into a [`RawGroup`] (a prompt and labelled or
//! scored candidates).
//!
//! | shape | fields (defaults, renamable in [`FieldNames`]) |
//! |---|---|
//! | standard | `prompt`, `chosen`, `rejected` (+ optional `score_chosen`, `score_rejected`) |
//! | implicit | `chosen`, `rejected`; the shared prefix is the prompt |
//! | conversational | either of the above with message lists `[{role, content}]` instead of strings (e.g. `ultrafeedback_binarized`, where `chosen` repeats the prompt turn) |
//! | multi-response | `instruction` + `completions[].response` / `completions[].overall_score` (UltraFeedback raw), or `prompt` + `responses` + `scores` / `ranks` |
//!
//! `rejected` may also be a list of responses: several strong negatives for one prompt.

use serde_json::{Map, Value};

use super::config::{FieldNames, ShapeKind};
use super::error::{FieldError, Problem, json_type};
use crate::text::Message;

/// A prompt as the data gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Prompt {
    /// A plain string: tokenised verbatim (`data.chat_template = "auto"`, TRL's rule), or as one user
    /// message through the chat template (`"always"`).
    Text(String),
    /// A list of chat messages (`[{role, content}]`), which goes through the chat template.
    Messages(Vec<Message>),
}

impl Prompt {
    /// The messages handed to the chat template.
    pub fn messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(t) => vec![Message::user(t.clone())],
            Prompt::Messages(m) => m.clone(),
        }
    }

    /// The identity used to tell prompts apart (weak negatives never come from the same prompt): the
    /// non-system turns' text, trimmed. Equal for `Text("hi")` and `[user: "hi"]`, and for the same
    /// question under different system prompts.
    pub fn key(&self) -> String {
        match self {
            Prompt::Text(t) => t.trim().to_owned(),
            Prompt::Messages(m) => {
                m.iter().filter(|m| m.role != "system").map(|m| m.content.trim()).collect::<Vec<_>>().join("\n")
            }
        }
    }

    /// Whether the prompt is a message list.
    pub fn is_conversational(&self) -> bool {
        matches!(self, Prompt::Messages(_))
    }
}

/// What the row says about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// TRL's `chosen`: the preferred response.
    Chosen,
    /// TRL's `rejected` (one of them when `rejected` is a list).
    Rejected,
    /// Multi-response rows: ranked by score.
    Scored,
}

/// A response as read from a row, before the grouping rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCandidate {
    /// The response text (for a conversation, its last assistant message's content).
    pub text: String,
    /// Its score from the row, if any (higher is better; a rank r is read as the score −r).
    pub score: Option<f32>,
    /// What the row says it is.
    pub label: Label,
    /// Where it sits in the row (`completions[2].response`), for reports.
    pub field: String,
}

/// One row read into a prompt and its candidates, before the grouping rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RawGroup {
    /// The prompt, with the row's system message, if any, prepended.
    pub prompt: Prompt,
    /// The row's responses: chosen then rejected for labelled rows, in row order for scored ones.
    pub candidates: Vec<RawCandidate>,
    /// Candidates left out while reading (multi-response only: empty or unscored responses).
    pub skipped: Vec<FieldError>,
    /// The prompt or a response was a message list.
    pub conversational: bool,
}

/// Picks the shape from the field names present (a JSON row's keys or a Parquet schema).
pub fn detect(keys: &[&str], f: &FieldNames) -> Result<ShapeKind, String> {
    let has = |k: &str| keys.iter().any(|x| *x == top(k));
    if has(&f.completions) && (has(&f.instruction) || has(&f.prompt)) {
        return Ok(ShapeKind::MultiResponse);
    }
    if has(&f.responses) && has(&f.prompt) {
        return Ok(ShapeKind::MultiResponse);
    }
    if has(&f.chosen) && has(&f.rejected) {
        return Ok(if has(&f.prompt) { ShapeKind::Standard } else { ShapeKind::Implicit });
    }
    Err(format!(
        "cannot tell the dataset shape from the fields [{}]: expected `{}`/`{}` (+ `{}`), `{}` + `{}`, or `{}` + `{}` \
         (set `shape` and `fields` in the data config)",
        keys.join(", "),
        f.chosen,
        f.rejected,
        f.prompt,
        f.instruction,
        f.completions,
        f.prompt,
        f.responses
    ))
}

/// The top-level column a (possibly dotted) field name lives in.
fn top(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The columns a shape reads (for Parquet projection and schema checks).
pub fn columns(shape: ShapeKind, f: &FieldNames, available: &[String]) -> Vec<String> {
    let has = |name: &str| available.iter().any(|c| c == top(name));
    let need: Vec<&str> = match shape {
        ShapeKind::Standard => vec![f.prompt.as_str(), f.chosen.as_str(), f.rejected.as_str()],
        ShapeKind::Implicit => vec![f.chosen.as_str(), f.rejected.as_str()],
        ShapeKind::MultiResponse if has(&f.completions) => {
            let p = if has(&f.instruction) { f.instruction.as_str() } else { f.prompt.as_str() };
            vec![p, f.completions.as_str()]
        }
        ShapeKind::MultiResponse => {
            let s = if has(&f.scores) { f.scores.as_str() } else { f.ranks.as_str() };
            vec![f.prompt.as_str(), f.responses.as_str(), s]
        }
        ShapeKind::Auto => vec![],
    };
    let optional = [f.system.as_str(), f.score_chosen.as_str(), f.score_rejected.as_str()];
    let optional =
        optional.into_iter().filter(|o| has(o) && shape != ShapeKind::MultiResponse || *o == f.system && has(o));
    need.into_iter().chain(optional).map(|s| top(s).to_owned()).collect()
}

/// Reads one row of the given (resolved) shape.
pub fn parse_row(row: &Map<String, Value>, shape: ShapeKind, f: &FieldNames) -> Result<RawGroup, FieldError> {
    let mut g = match shape {
        ShapeKind::Standard => standard(row, f)?,
        ShapeKind::Implicit => implicit(row, f)?,
        ShapeKind::MultiResponse => multi(row, f)?,
        ShapeKind::Auto => {
            let keys: Vec<&str> = row.keys().map(String::as_str).collect();
            let shape = detect(&keys, f).map_err(|m| FieldError { field: None, problem: Problem::Invalid(m) })?;
            return parse_row(row, shape, f);
        }
    };
    if let Some(sys) = get(row, &f.system)
        && !sys.is_null()
    {
        let sys = text(sys, &f.system)?;
        let mut msgs = g.prompt.messages();
        if msgs.first().is_none_or(|m| m.role != "system") {
            msgs.insert(0, Message::new("system", sys));
            g.prompt = Prompt::Messages(msgs);
        }
    }
    let is_conv = |k: &str| matches!(get(row, k), Some(Value::Array(a)) if a.first().is_some_and(Value::is_object));
    g.conversational =
        g.prompt.is_conversational() || [&f.chosen, &f.rejected, &f.responses].iter().any(|k| is_conv(k));
    if g.prompt.key().is_empty() {
        return Err(FieldError::new(prompt_field(shape, row, f), Problem::EmptyPrompt));
    }
    Ok(g)
}

fn prompt_field(shape: ShapeKind, row: &Map<String, Value>, f: &FieldNames) -> String {
    match shape {
        ShapeKind::Implicit => f.chosen.clone(),
        ShapeKind::MultiResponse if get(row, &f.instruction).is_some() => f.instruction.clone(),
        _ => f.prompt.clone(),
    }
}

/// A field, by exact key first, then by dotted path into nested objects.
pub fn get<'a>(row: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = row.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = row.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn need<'a>(row: &'a Map<String, Value>, name: &str) -> Result<&'a Value, FieldError> {
    match get(row, name) {
        Some(Value::Null) | None => Err(FieldError::new(name, Problem::MissingField)),
        Some(v) => Ok(v),
    }
}

fn wrong(field: &str, expected: &'static str, v: &Value) -> FieldError {
    FieldError::new(field, Problem::WrongType { expected, found: json_type(v) })
}

fn text(v: &Value, field: &str) -> Result<String, FieldError> {
    v.as_str().map(str::to_owned).ok_or_else(|| wrong(field, "a string", v))
}

/// A number, or a string holding one (UltraFeedback's ratings are strings like "4"); `None` for null,
/// "N/A" and other non-numbers.
fn score(v: &Value, field: &str) -> Result<Option<f32>, FieldError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64().map(|x| x as f32).filter(|x| x.is_finite())),
        Value::String(s) => Ok(s.trim().parse::<f32>().ok().filter(|x| x.is_finite())),
        other => Err(wrong(field, "a number", other)),
    }
}

fn messages(v: &Value, field: &str) -> Result<Vec<Message>, FieldError> {
    let Value::Array(items) = v else {
        return Err(wrong(field, "a list of messages", v));
    };
    items.iter().enumerate().map(|(i, m)| message(m, &format!("{field}[{i}]"))).collect()
}

/// `{role, content}`; content may be a string or a list of parts (`{"type": "text", "text": ...}`).
fn message(v: &Value, field: &str) -> Result<Message, FieldError> {
    let Value::Object(o) = v else {
        return Err(wrong(field, "a message object {role, content}", v));
    };
    let role = match o.get("role") {
        Some(Value::String(r)) => r.clone(),
        Some(other) => return Err(wrong(&format!("{field}.role"), "a string", other)),
        None => {
            return Err(FieldError::new(format!("{field}.role"), Problem::MissingField));
        }
    };
    let cfield = format!("{field}.content");
    let content = match o.get("content") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Null) => String::new(),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (i, p) in parts.iter().enumerate() {
                match p.get("text") {
                    Some(Value::String(t)) => s.push_str(t),
                    _ if p.get("type").and_then(Value::as_str).is_some_and(|t| t != "text") => {
                        return Err(FieldError::new(
                            format!("{cfield}[{i}]"),
                            Problem::Invalid("only text content parts are supported".into()),
                        ));
                    }
                    _ => {
                        return Err(wrong(&format!("{cfield}[{i}]"), "a text part {type, text}", p));
                    }
                }
            }
            s
        }
        Some(other) => return Err(wrong(&cfield, "a string", other)),
        None => return Err(FieldError::new(cfield, Problem::MissingField)),
    };
    Ok(Message { role, content })
}

fn prompt(v: &Value, field: &str) -> Result<Prompt, FieldError> {
    match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(_) => Ok(Prompt::Messages(messages(v, field)?)),
        other => Err(wrong(field, "a string or a list of messages", other)),
    }
}

/// A response: a string, or a conversation whose last message is the assistant's answer and whose
/// earlier messages (if any) must repeat `prompt`.
fn response(v: &Value, field: &str, prompt: Option<&Prompt>) -> Result<String, FieldError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => {
            let msgs = messages(v, field)?;
            let Some((last, before)) = msgs.split_last() else {
                return Err(FieldError::new(field, Problem::EmptyResponse));
            };
            if last.role != "assistant" {
                return Err(FieldError::new(
                    format!("{field}[{}].role", msgs.len() - 1),
                    Problem::Invalid(format!("the response must end with an assistant message, not {:?}", last.role)),
                ));
            }
            if let Some(p) = prompt
                && !before.is_empty()
                && before != p.messages().as_slice()
            {
                return Err(FieldError::new(
                    field,
                    Problem::Invalid("the conversation does not start with the row's prompt".into()),
                ));
            }
            last.content.clone()
        }
        other => return Err(wrong(field, "a string or a list of messages", other)),
    };
    if text.trim().is_empty() {
        return Err(FieldError::new(field, Problem::EmptyResponse));
    }
    Ok(text)
}

/// `rejected`: one response, or a list of responses (strings or conversations).
fn responses_of(v: &Value, field: &str, prompt: Option<&Prompt>) -> Result<Vec<(String, String)>, FieldError> {
    match v {
        Value::Array(items) if items.first().is_some_and(|x| x.is_string() || x.is_array()) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let name = format!("{field}[{i}]");
                response(x, &name, prompt).map(|t| (t, name))
            })
            .collect(),
        Value::Array(items) if items.is_empty() => Err(FieldError::new(field, Problem::EmptyResponse)),
        _ => Ok(vec![(response(v, field, prompt)?, field.to_owned())]),
    }
}

fn scores_for(row: &Map<String, Value>, field: &str, n: usize) -> Result<Vec<Option<f32>>, FieldError> {
    match get(row, field) {
        None | Some(Value::Null) => Ok(vec![None; n]),
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(FieldError::new(
                    field,
                    Problem::Invalid(format!("{} scores for {n} responses", items.len())),
                ));
            }
            items.iter().enumerate().map(|(i, x)| score(x, &format!("{field}[{i}]"))).collect()
        }
        Some(v) if n == 1 => Ok(vec![score(v, field)?]),
        Some(v) => Err(wrong(field, "a list of scores", v)),
    }
}

fn labelled(
    row: &Map<String, Value>,
    f: &FieldNames,
    prompt: Prompt,
    chosen: String,
    rejected: Vec<(String, String)>,
) -> Result<RawGroup, FieldError> {
    let sc = scores_for(row, &f.score_chosen, 1)?[0];
    let sr = scores_for(row, &f.score_rejected, rejected.len())?;
    let mut candidates = vec![RawCandidate { text: chosen, score: sc, label: Label::Chosen, field: f.chosen.clone() }];
    for ((text, field), score) in rejected.into_iter().zip(sr) {
        candidates.push(RawCandidate { text, score, label: Label::Rejected, field });
    }
    Ok(RawGroup { prompt, candidates, skipped: Vec::new(), conversational: false })
}

fn standard(row: &Map<String, Value>, f: &FieldNames) -> Result<RawGroup, FieldError> {
    let p = prompt(need(row, &f.prompt)?, &f.prompt)?;
    let chosen = response(need(row, &f.chosen)?, &f.chosen, Some(&p))?;
    let rejected = responses_of(need(row, &f.rejected)?, &f.rejected, Some(&p))?;
    labelled(row, f, p, chosen, rejected)
}

fn implicit(row: &Map<String, Value>, f: &FieldNames) -> Result<RawGroup, FieldError> {
    let c = need(row, &f.chosen)?;
    let r = need(row, &f.rejected)?;
    match (c, r) {
        (Value::String(c), Value::String(r)) => {
            let cut = implicit_split(c, r, f.implicit_prompt_delimiter.as_deref());
            let prompt = Prompt::Text(c[..cut].to_owned());
            let (cr, rr) = (&c[cut..], &r[cut..]);
            for (t, field) in [(cr, &f.chosen), (rr, &f.rejected)] {
                if t.trim().is_empty() {
                    return Err(FieldError::new(field.as_str(), Problem::EmptyResponse));
                }
            }
            labelled(row, f, prompt, cr.to_owned(), vec![(rr.to_owned(), f.rejected.clone())])
        }
        (Value::Array(_), Value::Array(_)) => {
            let cm = messages(c, &f.chosen)?;
            let rm = messages(r, &f.rejected)?;
            if cm.len() < 2 || rm.len() != cm.len() || cm[..cm.len() - 1] != rm[..rm.len() - 1] {
                return Err(FieldError::new(
                    f.rejected.as_str(),
                    Problem::Invalid("chosen and rejected conversations must share every turn but the last".into()),
                ));
            }
            let p = Prompt::Messages(cm[..cm.len() - 1].to_vec());
            let chosen = response(c, &f.chosen, Some(&p))?;
            let rejected = response(r, &f.rejected, Some(&p))?;
            labelled(row, f, p, chosen, vec![(rejected, f.rejected.clone())])
        }
        (Value::String(_), other) | (Value::Array(_), other) => {
            Err(wrong(&f.rejected, "the same type as `chosen`", other))
        }
        (other, _) => Err(wrong(&f.chosen, "a string or a list of messages", other)),
    }
}

/// Byte index where the prompt ends in an implicit-prompt pair. With a delimiter: right after its last
/// occurrence in the shared prefix. Without: TRL's rule, the first differing character, moved back one
/// if the character before it is a space (so responses start with their space).
pub fn implicit_split(c: &str, r: &str, delimiter: Option<&str>) -> usize {
    let mut common = 0;
    for ((i, a), b) in c.char_indices().zip(r.chars()) {
        if a != b {
            break;
        }
        common = i + a.len_utf8();
    }
    if let Some(d) = delimiter.filter(|d| !d.is_empty())
        && let Some(p) = c[..common].rfind(d)
    {
        return p + d.len();
    }
    if common > 0 && common < c.len().min(r.len()) && c[..common].ends_with(' ') {
        common -= 1;
    }
    common
}

fn multi(row: &Map<String, Value>, f: &FieldNames) -> Result<RawGroup, FieldError> {
    let pfield = if get(row, &f.instruction).is_some() { &f.instruction } else { &f.prompt };
    let p = prompt(need(row, pfield)?, pfield)?;
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    if get(row, top(&f.completions)).is_some() {
        let list = need(row, &f.completions)?;
        let Value::Array(items) = list else {
            return Err(wrong(&f.completions, "a list of objects", list));
        };
        for (i, item) in items.iter().enumerate() {
            let base = format!("{}[{i}]", f.completions);
            let Value::Object(obj) = item else {
                return Err(wrong(&base, "an object", item));
            };
            let rfield = format!("{base}.{}", f.completion_response);
            let sfield = format!("{base}.{}", f.completion_score);
            let rv = get(obj, &f.completion_response).ok_or_else(|| FieldError::new(&rfield, Problem::MissingField))?;
            let sc = match get(obj, &f.completion_score) {
                Some(v) => score(v, &sfield)?,
                None => None,
            };
            push_candidate(&mut candidates, &mut skipped, response(rv, &rfield, Some(&p)), sc, rfield, sfield)?;
        }
    } else {
        let list = need(row, &f.responses)?;
        let Value::Array(items) = list else {
            return Err(wrong(&f.responses, "a list of responses", list));
        };
        let scores = match get(row, &f.scores) {
            Some(v) if !v.is_null() => scores_for(row, &f.scores, items.len())?,
            _ => match get(row, &f.ranks) {
                Some(v) if !v.is_null() => {
                    scores_for(row, &f.ranks, items.len())?.into_iter().map(|r| r.map(|r| -r)).collect()
                }
                _ => return Err(FieldError::new(f.scores.as_str(), Problem::MissingField)),
            },
        };
        for (i, (item, sc)) in items.iter().zip(scores).enumerate() {
            let rfield = format!("{}[{i}]", f.responses);
            let sfield = format!("{}[{i}]", f.scores);
            push_candidate(&mut candidates, &mut skipped, response(item, &rfield, Some(&p)), sc, rfield, sfield)?;
        }
    }
    Ok(RawGroup { prompt: p, candidates, skipped, conversational: false })
}

fn push_candidate(
    out: &mut Vec<RawCandidate>,
    skipped: &mut Vec<FieldError>,
    text: Result<String, FieldError>,
    score: Option<f32>,
    field: String,
    score_field: String,
) -> Result<(), FieldError> {
    // One empty or unscored response among several is skipped (and reported), not the whole row.
    match (text, score) {
        (Err(e), _) if e.problem == Problem::EmptyResponse => skipped.push(e),
        (Err(e), _) => return Err(e),
        (Ok(_), None) => skipped.push(FieldError::new(score_field, Problem::Unscored)),
        (Ok(text), Some(s)) => out.push(RawCandidate { text, score: Some(s), label: Label::Scored, field }),
    }
    Ok(())
}
