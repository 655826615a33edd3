//! TextCodec against transformers: chat renderings, token ids and prompt/response splits from the
//! golden fixtures (made with transformers' apply_chat_template and tokenizers).

use crate::common::fixture;
use std::path::PathBuf;

use epa::text::{Boundary, Message, TextCodec};
use serde_json::Value;

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
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
            assert_eq!(codec.encode(&rendered, false).unwrap(), ids(&case["ids"]), "{model}");
            let p = codec.encode_prompt(&msgs).unwrap();
            assert_eq!(p.ids, ids(&case["ids"]), "{model}: encode_prompt");
            assert_eq!(codec.decode(&p.ids, false).unwrap(), rendered, "{model}: decode round trip");
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
            assert_eq!(codec.encode(text, false).unwrap(), expected, "{model}: encode(text)");
            let user = text.strip_prefix("<|im_start|>user\n").unwrap().split("<|im_end|>").next().unwrap();
            let response = seq["response"].as_str().unwrap();
            let pair = codec.encode_pair(&[Message::user(user)], response).unwrap();
            assert_eq!(pair.boundary, Boundary::Clean);
            assert_eq!(pair.input_ids(), expected, "{model}: prompt ++ response");
            let mask: Vec<u64> =
                seq["completion_mask"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            let n_resp = mask.iter().filter(|&&m| m == 1).count();
            assert_eq!(pair.response_ids.len(), n_resp, "{model}: response length = completion_mask ones");
            assert!(mask[..pair.prompt_ids.len()].iter().all(|&m| m == 0));
            // The response ends with the template's end of turn: <|im_end|> "\n".
            assert_eq!(pair.response_ids[pair.response_ids.len() - 2], codec.eos_token_id().unwrap());
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
    std::fs::copy(fixture("tiny-llama").join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
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
    let reference = TextCodec::from_hf_folder(&fixture("tiny-llama")).unwrap().render_chat(&msgs, true).unwrap();
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
    assert_eq!(c.decode(&pair.input_ids(), false).unwrap(), "Q: why\nA: because<|im_end|>");
    // A template that renders earlier turns differently once an answer follows cannot be split.
    let dir = folder_with(
        serde_json::json!({"eos_token": "<|im_end|>"}),
        Some(
            "{% if messages[-1].role == 'assistant' %}[done]{% endif %}{% for m in messages %}{{ m.content }}\n{% endfor %}",
        ),
    );
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    let err = c.encode_pair(&[Message::user("why")], "because").unwrap_err();
    assert!(err.to_string().contains("renders the prompt differently"), "{err}");
    assert!(c.encode_pair(&[Message::user("why")], "").is_err(), "empty response");
}

#[test]
fn without_a_template_prompt_and_response_are_concatenated_and_eos_appended() {
    let dir = folder_with(serde_json::json!({"eos_token": "<|im_end|>"}), None);
    let c = TextCodec::from_hf_folder(dir.path()).unwrap();
    assert!(!c.has_chat_template());
    let pair = c.encode_pair(&[Message::user("Question: why?\nAnswer:")], " because").unwrap();
    assert_eq!(c.decode(&pair.prompt_ids, false).unwrap(), "Question: why?\nAnswer:");
    assert_eq!(c.decode(&pair.response_ids, false).unwrap(), " because<|im_end|>");
}

#[test]
fn saved_folder_reloads_identically() {
    let codec = TextCodec::from_hf_folder(&fixture("tiny-qwen2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    codec.save_to_folder(dir.path()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let cfg = json(dir.path().join("tokenizer_config.json"));
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert!(cfg["chat_template"].as_str().unwrap().contains("add_generation_prompt"));
    let back = TextCodec::from_hf_folder(dir.path()).unwrap();
    let msgs = [Message::new("system", "Be brief."), Message::user("What is a whale?")];
    assert_eq!(back.render_chat(&msgs, true).unwrap(), codec.render_chat(&msgs, true).unwrap());
    assert_eq!(back.encode_pair(&msgs, "A mammal.").unwrap(), codec.encode_pair(&msgs, "A mammal.").unwrap());
    assert_eq!(back.bos_token_id(), codec.bos_token_id());
    // from_parts, as a GGUF loader builds it.
    let parts = TextCodec::from_parts(
        codec.tokenizer().clone(),
        codec.chat_template().map(|t| t.source().to_owned()),
        Some("<|im_start|>".into()),
        Some("<|im_end|>".into()),
    )
    .unwrap();
    assert_eq!(parts.encode_pair(&msgs, "A mammal.").unwrap(), codec.encode_pair(&msgs, "A mammal.").unwrap());
}

/// Renderings of Llama-3.1-, Qwen2.5-, Mistral- and Zephyr-style templates and a template using
/// namespace, loop controls, Python string methods, `items()`, `map` and `tojson`, made by jinja2 set up
/// as transformers sets it up (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
/// its `tojson` and `raise_exception`; `tools=None`, `documents=None`), including two raised exceptions.
const JINJA2_GOLDEN: &str = r####"{
 "templates": {
  "llama3": "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions.\" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
  "qwen25": "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n",
  "mistral": "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
  "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
  "gemma_like": "{{ bos_token }}{% set ns = namespace(count=0) %}\n{% for m in messages %}\n  {% if m.role == 'system' %}{% continue %}{% endif %}\n  {% set ns.count = ns.count + 1 %}\n  <start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content | trim }}<end_of_turn>\n  {% if ns.count > 2 %}{% break %}{% endif %}\n{% endfor %}\n{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}\n{{ {'n': ns.count, 'roles': messages | map(attribute='role') | list, 'ü': 'é \"q\"'} | tojson }}\n{{ {'a': [1, 2.5, none], 'b': {}} | tojson(indent=2) }}\n{% if messages[-1].content.strip().upper().startswith('HI') %}greeting{% endif %} {{ messages[0].content.split(' ') | length }} {{ messages[0].content.replace('e', '3') }}\n{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }};{% endfor %}\n"
 },
 "cases": [
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is a whale?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA mammal.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi, big?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is a whale?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA mammal.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi, big?<|eot_id|>"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\none<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\ntwo<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nthree<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nfour<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\none<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\ntwo<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nthree<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nfour<|eot_id|>"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\na<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nb<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  },
  {
   "template": "llama3",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\na<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nb<|eot_id|>"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n<|im_start|>assistant\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|im_start|>system\n Be brief. <|im_end|>\n<|im_start|>user\nWhat is a whale?<|im_end|>\n<|im_start|>assistant\nA mammal.<|im_end|>\n<|im_start|>user\nHi, big?<|im_end|>\n<|im_start|>assistant\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|im_start|>system\n Be brief. <|im_end|>\n<|im_start|>user\nWhat is a whale?<|im_end|>\n<|im_start|>assistant\nA mammal.<|im_end|>\n<|im_start|>user\nHi, big?<|im_end|>\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\none<|im_end|>\n<|im_start|>assistant\ntwo<|im_end|>\n<|im_start|>user\nthree<|im_end|>\n<|im_start|>assistant\nfour<|im_end|>\n<|im_start|>assistant\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\none<|im_end|>\n<|im_start|>assistant\ntwo<|im_end|>\n<|im_start|>user\nthree<|im_end|>\n<|im_start|>assistant\nfour<|im_end|>\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n"
  },
  {
   "template": "qwen25",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s> [INST] Hi there  [/INST]"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s> [INST] Hi there  [/INST]"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s> [INST]  Be brief. \n\nWhat is a whale? [/INST] A mammal.</s> [INST] Hi, big? [/INST]"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s> [INST]  Be brief. \n\nWhat is a whale? [/INST] A mammal.</s> [INST] Hi, big? [/INST]"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s> [INST] one [/INST] two</s> [INST] three [/INST] four</s>"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s> [INST] one [/INST] two</s> [INST] three [/INST] four</s>"
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": true,
   "error": "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
  },
  {
   "template": "mistral",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": false,
   "error": "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|user|>\nHi there </s>\n<|assistant|>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|user|>\nHi there </s>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|system|>\n Be brief. </s>\n<|user|>\nWhat is a whale?</s>\n<|assistant|>\nA mammal.</s>\n<|user|>\nHi, big?</s>\n<|assistant|>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|system|>\n Be brief. </s>\n<|user|>\nWhat is a whale?</s>\n<|assistant|>\nA mammal.</s>\n<|user|>\nHi, big?</s>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|user|>\none</s>\n<|assistant|>\ntwo</s>\n<|user|>\nthree</s>\n<|assistant|>\nfour</s>\n<|assistant|>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|user|>\none</s>\n<|assistant|>\ntwo</s>\n<|user|>\nthree</s>\n<|assistant|>\nfour</s>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<|user|>\na</s>\n<|user|>\nb</s>\n<|assistant|>\n"
  },
  {
   "template": "zephyr",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<|user|>\na</s>\n<|user|>\nb</s>\n"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s>  <start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n{\"n\": 1, \"roles\": [\"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\ngreeting 3 Hi th3r3 \nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "Hi there "
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s>  <start_of_turn>user\nHi there<end_of_turn>\n{\"n\": 1, \"roles\": [\"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\ngreeting 3 Hi th3r3 \nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s>  <start_of_turn>user\nWhat is a whale?<end_of_turn>\n  <start_of_turn>model\nA mammal.<end_of_turn>\n  <start_of_turn>user\nHi, big?<end_of_turn>\n<start_of_turn>model\n{\"n\": 3, \"roles\": [\"system\", \"user\", \"assistant\", \"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\ngreeting 4  B3 bri3f. \nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "system",
     "content": " Be brief. "
    },
    {
     "role": "user",
     "content": "What is a whale?"
    },
    {
     "role": "assistant",
     "content": "A mammal."
    },
    {
     "role": "user",
     "content": "Hi, big?"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s>  <start_of_turn>user\nWhat is a whale?<end_of_turn>\n  <start_of_turn>model\nA mammal.<end_of_turn>\n  <start_of_turn>user\nHi, big?<end_of_turn>\n{\"n\": 3, \"roles\": [\"system\", \"user\", \"assistant\", \"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\ngreeting 4  B3 bri3f. \nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s>  <start_of_turn>user\none<end_of_turn>\n  <start_of_turn>model\ntwo<end_of_turn>\n  <start_of_turn>user\nthree<end_of_turn>\n<start_of_turn>model\n{\"n\": 3, \"roles\": [\"user\", \"assistant\", \"user\", \"assistant\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\n 1 on3\nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "one"
    },
    {
     "role": "assistant",
     "content": "two"
    },
    {
     "role": "user",
     "content": "three"
    },
    {
     "role": "assistant",
     "content": "four"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s>  <start_of_turn>user\none<end_of_turn>\n  <start_of_turn>model\ntwo<end_of_turn>\n  <start_of_turn>user\nthree<end_of_turn>\n{\"n\": 3, \"roles\": [\"user\", \"assistant\", \"user\", \"assistant\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\n 1 on3\nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": true,
   "rendered": "<s>  <start_of_turn>user\na<end_of_turn>\n  <start_of_turn>user\nb<end_of_turn>\n<start_of_turn>model\n{\"n\": 2, \"roles\": [\"user\", \"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\n 1 a\nx=1;y=2;"
  },
  {
   "template": "gemma_like",
   "messages": [
    {
     "role": "user",
     "content": "a"
    },
    {
     "role": "user",
     "content": "b"
    }
   ],
   "add_generation_prompt": false,
   "rendered": "<s>  <start_of_turn>user\na<end_of_turn>\n  <start_of_turn>user\nb<end_of_turn>\n{\"n\": 2, \"roles\": [\"user\", \"user\"], \"ü\": \"é \\\"q\\\"\"}\n{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {}\n}\n 1 a\nx=1;y=2;"
  }
 ]
}"####;

#[test]
fn real_world_templates_render_exactly_like_jinja2() {
    use epa::text::{ChatTemplate, SpecialTokens};
    let golden: Value = serde_json::from_str(JINJA2_GOLDEN).unwrap();
    let special = SpecialTokens { bos_token: Some("<s>".into()), eos_token: Some("</s>".into()), ..Default::default() };
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let tmpl = ChatTemplate::new(golden["templates"][name].as_str().unwrap()).unwrap();
        let msgs = messages(&case["messages"]);
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = tmpl.render(&msgs, agp, &special);
        match case.get("error") {
            Some(e) => {
                let err = format!("{:#}", got.unwrap_err());
                assert!(err.contains(e.as_str().unwrap()), "{name}: {err}");
            }
            None => assert_eq!(got.unwrap(), case["rendered"].as_str().unwrap(), "{name} {msgs:?} {agp}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 40);
}
