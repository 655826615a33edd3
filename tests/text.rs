//! TextCodec against transformers: chat renderings, token ids and prompt/response splits from the
//! golden fixtures (made with transformers' apply_chat_template and tokenizers).

use std::path::{Path, PathBuf};

use epa::text::{Boundary, Message, TextCodec};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn chat_renderings_and_ids_match_transformers() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let codec = TextCodec::from_hf_folder(&fixture(model)).unwrap();
        let golden = json(fixture(model).join("chat_golden.json"));
        for case in golden.as_array().unwrap() {
            let msgs = messages(&case["messages"]);
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let rendered = codec.render_chat(&msgs, agp).unwrap();
            assert_eq!(rendered, case["rendered"].as_str().unwrap(), "{model}");
            assert_eq!(
                codec.encode(&rendered, false).unwrap(),
                ids(&case["ids"]),
                "{model}"
            );
            let p = codec.encode_prompt(&msgs).unwrap();
            assert_eq!(p.ids, ids(&case["ids"]), "{model}: encode_prompt");
            assert_eq!(
                codec.decode(&p.ids, false).unwrap(),
                rendered,
                "{model}: decode round trip"
            );
        }
    }
}

/// Golden sequences are `user(prompt) + assistant(response)` rendered whole; `completion_mask` marks the
/// response tokens. encode_pair must reproduce the ids and put the boundary where transformers' mask does.
#[test]
fn encode_pair_matches_golden_sequences_and_completion_masks() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let codec = TextCodec::from_hf_folder(&fixture(model)).unwrap();
        let golden = json(fixture(model).join("golden.json"));
        for seq in golden["sequences"].as_array().unwrap() {
            let text = seq["text"].as_str().unwrap();
            let expected = ids(&seq["input_ids"]);
            assert_eq!(
                codec.encode(text, false).unwrap(),
                expected,
                "{model}: encode(text)"
            );
            let user = text
                .strip_prefix("<|im_start|>user\n")
                .unwrap()
                .split("<|im_end|>")
                .next()
                .unwrap();
            let response = seq["response"].as_str().unwrap();
            let pair = codec.encode_pair(&[Message::user(user)], response).unwrap();
            assert_eq!(pair.boundary, Boundary::Clean);
            assert_eq!(pair.input_ids(), expected, "{model}: prompt ++ response");
            let mask: Vec<u64> = seq["completion_mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let n_resp = mask.iter().filter(|&&m| m == 1).count();
            assert_eq!(
                pair.response_ids.len(),
                n_resp,
                "{model}: response length = completion_mask ones"
            );
            assert!(mask[..pair.prompt_ids.len()].iter().all(|&m| m == 0));
            // The response ends with the template's end of turn: <|im_end|> "\n".
            assert_eq!(
                pair.response_ids[pair.response_ids.len() - 2],
                codec.eos_token_id().unwrap()
            );
        }
    }
}

#[test]
fn special_tokens_from_tokenizer_config() {
    let codec = TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap();
    assert_eq!(codec.bos_token_id(), Some(1));
    assert_eq!(codec.eos_token_id(), Some(2));
    assert_eq!(codec.pad_token_id(), Some(0));
    assert!(codec.has_chat_template());
}

fn folder_with(config: Value, jinja: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    if let Some(j) = jinja {
        std::fs::write(dir.path().join("chat_template.jinja"), j).unwrap();
    }
    dir
}

#[test]
fn template_in_tokenizer_config_as_string_or_named_list_and_tokens_as_objects() {
    let tmpl = std::fs::read_to_string(fixture("tiny-llama").join("chat_template.jinja")).unwrap();
    let msgs = [Message::user("Hi!")];
    let reference = TextCodec::from_hf_folder(&fixture("tiny-llama"))
        .unwrap()
        .render_chat(&msgs, true)
        .unwrap();
    let as_string = folder_with(
        serde_json::json!({"bos_token": {"content": "<|im_start|>", "lstrip": false}, "eos_token": "<|im_end|>", "chat_template": tmpl}),
        None,
    );
    let c = TextCodec::from_hf_folder(as_string.path()).unwrap();
    assert_eq!(c.render_chat(&msgs, true).unwrap(), reference);
    assert_eq!(c.bos_token_id(), Some(1));
    let as_list = folder_with(
        serde_json::json!({"eos_token": "<|im_end|>", "chat_template": [
            {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": tmpl}]}),
        None,
    );
    let c = TextCodec::from_hf_folder(as_list.path()).unwrap();
    assert_eq!(c.render_chat(&msgs, true).unwrap(), reference);
    assert_eq!(c.pad_token_id(), Some(2), "no pad token: falls back to eos");
}

#[test]
fn unknown_special_token_is_an_error() {
    let dir = folder_with(serde_json::json!({"eos_token": "<missing>"}), None);
    let err = TextCodec::from_hf_folder(dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("<missing>"), "{err:#}");
}

#[test]
fn bos_rendered_by_the_template_is_not_doubled() {
    let dir = folder_with(
        serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
        Some(
            "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
        ),
    );
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    let pair = c.encode_pair(&[Message::user("hello")], " hi").unwrap();
    assert_eq!(pair.prompt_ids[0], 1);
    assert_ne!(pair.prompt_ids[1], 1);
    assert_eq!(pair.input_ids().iter().filter(|&&t| t == 1).count(), 1);
    assert_eq!(*pair.response_ids.last().unwrap(), 2);
}

#[test]
fn boundary_merge_is_detected_and_template_rewrite_is_an_error() {
    // The generation prompt ends in a space that merges with the response's first word.
    let dir = folder_with(
        serde_json::json!({"eos_token": "<|im_end|>"}),
        Some(
            "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n{% else %}A: {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}A: {% endif %}",
        ),
    );
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    let pair = c.encode_pair(&[Message::user("why")], "because").unwrap();
    assert_eq!(pair.boundary, Boundary::TextSplit);
    assert_eq!(
        c.decode(&pair.input_ids(), false).unwrap(),
        "Q: why\nA: because<|im_end|>"
    );
    // A template that renders earlier turns differently once an answer follows cannot be split.
    let dir = folder_with(
        serde_json::json!({"eos_token": "<|im_end|>"}),
        Some(
            "{% if messages[-1].role == 'assistant' %}[done]{% endif %}{% for m in messages %}{{ m.content }}\n{% endfor %}",
        ),
    );
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    let err = c
        .encode_pair(&[Message::user("why")], "because")
        .unwrap_err();
    assert!(
        err.to_string().contains("renders the prompt differently"),
        "{err}"
    );
    assert!(
        c.encode_pair(&[Message::user("why")], "").is_err(),
        "empty response"
    );
}

#[test]
fn without_a_template_prompt_and_response_are_concatenated_and_eos_appended() {
    let dir = folder_with(serde_json::json!({"eos_token": "<|im_end|>"}), None);
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    assert!(!c.has_chat_template());
    let pair = c
        .encode_pair(&[Message::user("Question: why?\nAnswer:")], " because")
        .unwrap();
    assert_eq!(
        c.decode(&pair.prompt_ids, false).unwrap(),
        "Question: why?\nAnswer:"
    );
    assert_eq!(
        c.decode(&pair.response_ids, false).unwrap(),
        " because<|im_end|>"
    );
}

#[test]
fn saved_folder_reloads_identically() {
    let codec = TextCodec::from_hf_folder(&fixture("tiny-qwen2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    codec.save_to_folder(dir.path()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let cfg = json(dir.path().join("tokenizer_config.json"));
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert!(
        cfg["chat_template"]
            .as_str()
            .unwrap()
            .contains("add_generation_prompt")
    );
    let back = TextCodec::from_hf_folder(dir.path()).unwrap();
    let msgs = [
        Message::new("system", "Be brief."),
        Message::user("What is a whale?"),
    ];
    assert_eq!(
        back.render_chat(&msgs, true).unwrap(),
        codec.render_chat(&msgs, true).unwrap()
    );
    assert_eq!(
        back.encode_pair(&msgs, "A mammal.").unwrap(),
        codec.encode_pair(&msgs, "A mammal.").unwrap()
    );
    assert_eq!(back.bos_token_id(), codec.bos_token_id());
    // from_parts, as a GGUF loader builds it.
    let parts = TextCodec::from_parts(
        codec.tokenizer().clone(),
        codec.chat_template().map(|t| t.source().to_owned()),
        Some("<|im_start|>".into()),
        Some("<|im_end|>".into()),
    )
    .unwrap();
    assert_eq!(
        parts.encode_pair(&msgs, "A mammal.").unwrap(),
        codec.encode_pair(&msgs, "A mammal.").unwrap()
    );
}
