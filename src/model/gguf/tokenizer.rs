//! Rebuilds a Hugging Face `tokenizers::Tokenizer` from GGUF tokenizer metadata
//! (`tokenizer.ggml.model = "gpt2"`, i.e. byte-level BPE).
//!
//! The tokenizer is assembled as a `tokenizer.json` document ([`tokenizer_json`]) and parsed by the
//! `tokenizers` crate, so what is built is exactly what a Hugging Face `tokenizer.json` with the same
//! content gives (and can be saved as one):
//! - model: BPE from `tokenizer.ggml.tokens` (id = index) and `tokenizer.ggml.merges` (`"a b"`);
//! - pre-tokenizer from `tokenizer.ggml.pre`: `smollm` → Sequence[Digits(individual), ByteLevel];
//!   `gpt2`/`default`/absent → ByteLevel; `llama-bpe` (Llama 3) and `qwen2` → their split regex
//!   with ByteLevel without its own regex; anything else is an error (a wrong pre-tokenizer would
//!   silently change token ids);
//! - ByteLevel decoder; post-processor: ByteLevel (adds nothing), or, when
//!   `tokenizer.ggml.add_bos_token` is true, a template that prepends the bos token (as Llama 3's
//!   tokenizer.json does) — only when encoding with `add_special_tokens = true`;
//! - tokens of type 3 (control) become special added tokens, type 4 (user-defined) plain added tokens.

use super::reader::{GgufFile, GgufValue};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A control token in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`): becomes a special
/// added token.
pub const TOKEN_TYPE_CONTROL: i64 = 3;
/// A user-defined token in `tokenizer.ggml.token_type`: becomes a plain (non-special) added token.
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Plain ChatML, used when the file carries no `tokenizer.chat_template`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn string_array<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let arr = match f.get(key) {
        None => bail!("{}: tokenizer metadata `{key}` is missing", f.path.display()),
        Some(v) => v.as_array().with_context(|| {
            format!("{}: metadata `{key}` is a {}, expected an array of strings", f.path.display(), v.type_name())
        })?,
    };
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().with_context(|| {
                format!("{}: `{key}`[{i}] is a {}, expected a string", f.path.display(), v.type_name())
            })
        })
        .collect()
}

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// (normalizer, pre-tokenizer) for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(f: &GgufFile, pre: Option<&str>) -> Result<(Value, Value)> {
    Ok(match pre.unwrap_or("default") {
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(false, true, true),
            ]}),
        ),
        "gpt2" | "default" => (Value::Null, byte_level(false, true, true)),
        "llama-bpe" | "llama3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false, true, false)]}),
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false, false, false)]}),
        ),
        other => bail!(
            "{}: pre-tokenizer `tokenizer.ggml.pre` = {other:?} is not supported (supported: smollm, gpt2, default, llama-bpe, qwen2)",
            f.path.display()
        ),
    })
}

/// The `tokenizer.json` document equivalent to the GGUF tokenizer metadata.
pub fn tokenizer_json(f: &GgufFile) -> Result<Value> {
    let model = f.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!(
            "{}: tokenizer model `tokenizer.ggml.model` = {model:?} is not supported (only \"gpt2\", byte-level BPE)",
            f.path.display()
        );
    }
    let tokens = string_array(f, "tokenizer.ggml.tokens")?;
    let merges = string_array(f, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(GgufValue::Array(a)) if a.len() == tokens.len() => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().with_context(|| {
                    format!("{}: `tokenizer.ggml.token_type`[{i}] is not an integer", f.path.display())
                })
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!(
            "{}: `tokenizer.ggml.token_type` must be an integer array as long as `tokenizer.ggml.tokens` ({})",
            f.path.display(),
            tokens.len()
        ),
    };

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(tok.to_string(), json!(id)).is_some() {
            bail!("{}: token {tok:?} appears twice in `tokenizer.ggml.tokens` (again at id {id})", f.path.display());
        }
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": ty == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok(json!([a, b])),
            _ => bail!(
                "{}: `tokenizer.ggml.merges`[{i}] = {m:?} is not two tokens separated by one space",
                f.path.display()
            ),
        })
        .collect::<Result<_>>()?;

    let pre = f.get("tokenizer.ggml.pre").and_then(|v| v.as_str());
    let (normalizer, pre_tokenizer) = pre_tokenizer(f, pre)?;
    let post_processor = match (
        f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()),
        special_token(f, "tokenizer.ggml.bos_token_id"),
    ) {
        // Like Llama 3's tokenizer.json: encode(text, add_special_tokens = true) prepends bos.
        (Some(true), Some(bos)) => {
            let id = f.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).unwrap_or(0);
            let mut specials = serde_json::Map::new();
            specials.insert(bos.clone(), json!({"id": bos, "ids": [id], "tokens": [bos]}));
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": specials,
            })
        }
        _ => byte_level(true, false, true),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": byte_level(true, true, true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// The tokenizer described by the GGUF metadata.
pub fn build_tokenizer(f: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let doc = tokenizer_json(f)?;
    let text = serde_json::to_string(&doc)?;
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| anyhow::anyhow!("{}: cannot build the tokenizer from GGUF metadata: {e}", f.path.display()))
}

/// The text of token `key` (e.g. `tokenizer.ggml.bos_token_id`), if the id is present and valid.
pub fn special_token(f: &GgufFile, key: &str) -> Option<String> {
    let id = f.get(key)?.as_u64()? as usize;
    let tokens = f.get("tokenizer.ggml.tokens")?.as_array()?;
    tokens.get(id)?.as_str().map(str::to_string)
}
