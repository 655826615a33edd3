//! Chat templates rendered the way transformers renders them.
//!
//! transformers compiles `chat_template` with jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])` and adds the globals `raise_exception`, `strftime_now`
//! and a `tojson` filter that is Python's `json.dumps(ensure_ascii=False)` (no HTML escaping). This module
//! sets minijinja up the same way; Python string/dict methods (`.strip()`, `.items()`, `.startswith()` …)
//! come from `minijinja_contrib::pycompat`.

use anyhow::{Context, Result};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use super::Message;

const NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish()
    }
}

/// The variables a template sees besides `messages` and `add_generation_prompt`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpecialTokens {
    // Unset tokens are left undefined (not `none`), as transformers only passes the tokens it has.
    /// `bos_token` (tokenizer_config.json, or the GGUF bos token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token: Option<String>,
    /// `eos_token` (tokenizer_config.json, or the GGUF eos token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<String>,
    /// `pad_token` (tokenizer_config.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_token: Option<String>,
    /// `unk_token` (tokenizer_config.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unk_token: Option<String>,
}

#[derive(Serialize)]
struct RenderContext<'a> {
    messages: &'a [Message],
    // transformers passes these as None when absent, so `tools is not none` is false.
    tools: Option<()>,
    documents: Option<()>,
    add_generation_prompt: bool,
    #[serde(flatten)]
    special: &'a SpecialTokens,
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported with the template line.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
            .context("compiling the chat template")?;
        Ok(Self { env, source: source.to_owned() })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant header.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool, special: &SpecialTokens) -> Result<String> {
        let tmpl = self.env.get_template(NAME).map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        let ctx = RenderContext { messages, tools: None, documents: None, add_generation_prompt, special };
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
            .context("rendering the chat template")
    }
}

/// minijinja errors carry their cause chain and template line; flatten them into one message.
fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Prints booleans and none as Python does (`True`, `False`, `None`); everything else as minijinja does.
fn python_formatter(out: &mut minijinja::Output, state: &minijinja::State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        minijinja::value::ValueKind::Bool if value.is_true() => "True",
        minijinja::value::ValueKind::Bool => "False",
        minijinja::value::ValueKind::None => "None",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(text).map_err(|_| Error::new(ErrorKind::WriteFailure, "writing the rendering"))
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `datetime.now().strftime(fmt)` in local time, as transformers defines it.
fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("bad strftime format {format:?}")))?;
    Ok(out)
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent, separators=…, sort_keys=…)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().unwrap_or("").to_owned()),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair"));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let json =
        serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = PyJson { indent, item_sep, key_sep, sort_keys: sort_keys.unwrap_or(false) };
    let mut out = String::new();
    style.dump(&json, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn dump(&self, v: &serde_json::Value, level: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Array(items) if items.is_empty() => out.push_str("[]"),
            J::Object(map) if map.is_empty() => out.push_str("{}"),
            J::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.dump(item, level + 1, out);
                }
                self.newline(level, out);
                out.push(']');
            }
            J::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push_str(&self.key_sep);
                    self.dump(item, level + 1, out);
                }
                self.newline(level, out);
                out.push('}');
            }
            other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<Message> {
        pairs.iter().map(|(r, c)| Message::new(*r, *c)).collect()
    }

    #[test]
    fn trim_and_lstrip_blocks_like_jinja2() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n",
        )
        .unwrap();
        let out = t.render(&msgs(&[("user", "a"), ("user", "b")]), false, &SpecialTokens::default()).unwrap();
        assert_eq!(out, "[a]\n[b]\n");
    }

    #[test]
    fn python_methods_loop_controls_and_exceptions() {
        let src = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
                   {{ m.content.strip().upper() }}{% if m.content.startswith(' x') %}!{% endif %}{% endfor %}\
                   {% if messages | length > 2 %}{{ raise_exception('too many') }}{% endif %}";
        let t = ChatTemplate::new(src).unwrap();
        let sp = SpecialTokens::default();
        assert_eq!(t.render(&msgs(&[("system", "s"), ("user", " xy ")]), false, &sp).unwrap(), "XY!");
        let err = t.render(&msgs(&[("a", "1"), ("b", "2"), ("c", "3")]), false, &sp).unwrap_err();
        assert!(format!("{err:#}").contains("too many"), "{err:#}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ {'a': [1, 2.5, 'é<'], 'b': none} | tojson }}|{{ [1, {'k': true}] | tojson(indent=2) }}",
        )
        .unwrap();
        let out = t.render(&[], false, &SpecialTokens::default()).unwrap();
        assert_eq!(out, "{\"a\": [1, 2.5, \"é<\"], \"b\": null}|[\n  1,\n  {\n    \"k\": true\n  }\n]");
    }

    #[test]
    fn booleans_and_none_print_like_python() {
        let t = ChatTemplate::new("{{ true }} {{ 1 > 2 }} {{ none }} {{ undefined_thing }}|{{ 'a' }}").unwrap();
        assert_eq!(t.render(&[], false, &SpecialTokens::default()).unwrap(), "True False None |a");
    }

    #[test]
    fn special_tokens_and_strftime_are_available() {
        let t = ChatTemplate::new("{{ bos_token }}{{ eos_token }}{{ strftime_now('%Y') | length }}").unwrap();
        let sp = SpecialTokens { bos_token: Some("<s>".into()), eos_token: Some("</s>".into()), ..Default::default() };
        assert_eq!(t.render(&[], false, &sp).unwrap(), "<s></s>4");
    }
}
