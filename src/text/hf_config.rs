//! Reading and writing the Hugging Face tokenizer folder files next to `tokenizer.json`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What `tokenizer_config.json` (and `chat_template.jinja`) say about special tokens and the template.
#[derive(Debug, Clone, Default)]
pub struct HfTokenizerConfig {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
    pub chat_template: Option<String>,
    /// The whole `tokenizer_config.json`, kept so saving preserves fields we do not interpret.
    pub raw: Option<serde_json::Map<String, Value>>,
}

/// A special token is written either as a string or as an AddedToken object `{"content": ...}`.
fn token_string(v: Option<&Value>, file: &Path, key: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => bail!("{}: field `{key}`: object without a string `content`", file.display()),
        },
        Some(other) => {
            bail!("{}: field `{key}`: expected a string or {{\"content\": ...}}, found {other}", file.display())
        }
    }
}

/// `chat_template` is a string, or a list of `{name, template}` (the one named `default` wins).
fn template_from_value(v: &Value, file: &Path) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(items) => {
            let mut first = None;
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let Some(t) = item.get("template").and_then(Value::as_str) else {
                    bail!("{}: field `chat_template`: list entry without a string `template`", file.display());
                };
                if name == Some("default") {
                    return Ok(Some(t.to_owned()));
                }
                first.get_or_insert_with(|| t.to_owned());
            }
            Ok(first)
        }
        other => bail!("{}: field `chat_template`: expected a string or a list, found {other}", file.display()),
    }
}

impl HfTokenizerConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let mut cfg = Self::default();
        let path = dir.join("tokenizer_config.json");
        if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let json: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            let Value::Object(map) = json else { bail!("{}: expected a JSON object", path.display()) };
            cfg.bos = token_string(map.get("bos_token"), &path, "bos_token")?;
            cfg.eos = token_string(map.get("eos_token"), &path, "eos_token")?;
            cfg.pad = token_string(map.get("pad_token"), &path, "pad_token")?;
            cfg.unk = token_string(map.get("unk_token"), &path, "unk_token")?;
            if let Some(t) = map.get("chat_template") {
                cfg.chat_template = template_from_value(t, &path)?;
            }
            cfg.raw = Some(map);
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            // transformers prefers the standalone file when both exist.
            cfg.chat_template =
                Some(std::fs::read_to_string(&jinja).with_context(|| format!("reading {}", jinja.display()))?);
        }
        Ok(cfg)
    }

    /// Writes `tokenizer_config.json`, `special_tokens_map.json` and `chat_template.jinja` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut map = self.raw.clone().unwrap_or_default();
        map.entry("tokenizer_class").or_insert_with(|| Value::from("PreTrainedTokenizerFast"));
        let mut specials = serde_json::Map::new();
        for (key, val) in
            [("bos_token", &self.bos), ("eos_token", &self.eos), ("pad_token", &self.pad), ("unk_token", &self.unk)]
        {
            let v = val.clone().map(Value::from).unwrap_or(Value::Null);
            if val.is_some() {
                specials.insert(key.to_owned(), v.clone());
            }
            map.insert(key.to_owned(), v);
        }
        match &self.chat_template {
            Some(t) => {
                map.insert("chat_template".into(), Value::from(t.clone()));
                write(&dir.join("chat_template.jinja"), t)?;
            }
            None => {
                map.remove("chat_template");
            }
        }
        write(&dir.join("tokenizer_config.json"), &serde_json::to_string_pretty(&Value::Object(map))?)?;
        write(&dir.join("special_tokens_map.json"), &serde_json::to_string_pretty(&Value::Object(specials))?)
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
