//! The prompts of an evaluation, from JSON Lines, a JSON array or Parquet (the readers of
//! [`crate::data::read`]): each row's `prompt` (a string, or a list of `{role, content}` messages;
//! UltraFeedback's raw `instruction` is accepted too). Preference files read as they are: every other
//! field (`chosen`, `rejected`, scores…) is ignored. A prompt seen twice is evaluated once.
//!
//! The gold judge needs each prompt's topic: a `topic` string field, else the topic of a demo prompt
//! ("Write one sentence about {topic}.").

use anyhow::{Result, bail};
use serde_json::Value;
use std::path::Path;

use crate::data::read::{ReadError, RowReader};
use crate::data::{Format, Prompt};
use crate::text::Message;

/// One prompt to evaluate.
#[derive(Debug, Clone)]
pub struct EvalPrompt {
    /// Where it was read (`file: line 3`), for messages.
    pub loc: String,
    /// The prompt: a string or a list of chat messages.
    pub prompt: Prompt,
    /// The row's `topic`, or the topic of a demo prompt.
    pub topic: Option<String>,
}

impl EvalPrompt {
    /// A plain-text user prompt (the demo's held-out prompts).
    pub fn text(loc: impl Into<String>, text: impl Into<String>, topic: Option<String>) -> Self {
        EvalPrompt { loc: loc.into(), prompt: Prompt::Text(text.into()), topic }
    }

    /// The messages handed to a chat template (a string prompt is one user message).
    pub fn messages(&self) -> Vec<Message> {
        self.prompt.messages()
    }

    /// The prompt as JSON (a string or the message list), for reports.
    pub fn to_json(&self) -> Value {
        match &self.prompt {
            Prompt::Text(t) => Value::String(t.clone()),
            Prompt::Messages(m) => serde_json::to_value(m).unwrap_or(Value::Null),
        }
    }
}

fn parse_prompt(v: &Value, field: &str) -> Result<Prompt> {
    let prompt = match v {
        Value::String(s) => Prompt::Text(s.clone()),
        Value::Array(_) => match serde_json::from_value::<Vec<Message>>(v.clone()) {
            Ok(m) => Prompt::Messages(m),
            Err(e) => bail!("field `{field}`: a list of {{role, content}} messages expected ({e})"),
        },
        other => bail!(
            "field `{field}`: a string or a list of messages expected, found {}",
            crate::data::error::json_type(other)
        ),
    };
    let empty = match &prompt {
        Prompt::Text(t) => t.trim().is_empty(),
        Prompt::Messages(m) => m.is_empty(),
    };
    if empty {
        bail!("field `{field}` is empty");
    }
    Ok(prompt)
}

/// Reads the prompts of `path`. Any row that cannot be read is an error naming the file, the line
/// (or element / row) and the field.
pub fn read_prompts(path: &Path) -> Result<Vec<EvalPrompt>> {
    let reader = RowReader::open(path, Format::Auto, 64 << 20)?;
    let mut out: Vec<EvalPrompt> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in reader {
        let row = match row {
            Ok(r) => r,
            Err(ReadError::Row(e)) => bail!("{e}"),
            Err(ReadError::Fatal(e)) => return Err(e),
        };
        let loc = row.loc.to_string();
        let (field, v) = match (row.value.get("prompt"), row.value.get("instruction")) {
            (Some(v), _) => ("prompt", v),
            (None, Some(v)) => ("instruction", v),
            (None, None) => bail!(
                "{loc}: field `prompt` is missing (each row needs a `prompt`: a string or a list of messages; \
                 conversational preference rows without one are not read)"
            ),
        };
        let prompt = parse_prompt(v, field).map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        let topic = match row.value.get("topic") {
            None | Some(Value::Null) => match &prompt {
                Prompt::Text(t) => crate::demo::topics::topic_of(t),
                Prompt::Messages(m) => {
                    m.iter().rev().find(|m| m.role == "user").and_then(|m| crate::demo::topics::topic_of(&m.content))
                }
            },
            Some(Value::String(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Some(_) => bail!("{loc}: field `topic`: a non-empty string expected"),
        };
        if seen.insert(prompt.key()) {
            out.push(EvalPrompt { loc, prompt, topic });
        }
    }
    if out.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, ext: &str) -> Result<Vec<EvalPrompt>> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(format!("p.{ext}"));
        std::fs::write(&p, text).unwrap();
        read_prompts(&p)
    }

    #[test]
    fn prompts_strings_messages_and_preference_rows() {
        let rows = read(
            concat!(
                "{\"prompt\": \"Write one sentence about cats.\"}\n",
                "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}], \"topic\": \"greetings\"}\n",
                "{\"prompt\": \"Say no.\", \"chosen\": \"No.\", \"rejected\": \"Yes.\"}\n",
                "{\"prompt\": \"Write one sentence about cats.\", \"chosen\": \"x\"}\n",
                "\n",
            ),
            "jsonl",
        )
        .unwrap();
        assert_eq!(rows.len(), 3, "the repeated prompt is read once");
        assert_eq!(rows[0].topic.as_deref(), Some("cats"));
        assert_eq!(rows[1].topic.as_deref(), Some("greetings"));
        assert_eq!(rows[1].messages()[0].content, "hi");
        assert_eq!(rows[2].topic, None);
        assert!(rows[2].loc.ends_with("line 3"), "{}", rows[2].loc);
        let arr = read("[{\"instruction\": \"Explain tides.\"}]", "json").unwrap();
        assert_eq!(arr[0].to_json(), Value::String("Explain tides.".into()));
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        for (text, needles) in [
            ("{\"prompt\": \"a\"}\n{\"chosen\": \"b\"}\n", vec!["p.jsonl: line 2", "`prompt`"]),
            ("{\"prompt\": 3}\n", vec!["line 1", "`prompt`", "a number"]),
            ("{\"prompt\": \"a\"}\n{oops\n", vec!["line 2", "JSON"]),
            ("{\"prompt\": [{\"role\": \"user\"}]}\n", vec!["line 1", "`prompt`", "messages"]),
            ("{\"prompt\": \"  \"}\n", vec!["line 1", "empty"]),
            ("{\"prompt\": \"a\", \"topic\": 5}\n", vec!["line 1", "`topic`"]),
            ("", vec!["no prompts"]),
        ] {
            let e = format!("{:#}", read(text, "jsonl").unwrap_err());
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e}");
            }
        }
    }
}
