//! GGUF reader tests: a small GGUF writer builds files from known values; loading must give them
//! back (exactly for f32, within the block format's error for quantised types), in Hugging Face
//! names, shapes and q/k row order. `quants.gguf` (made by llama.cpp's gguf-py, see its script)
//! is the independent referee for every block layout. The real SmolLM2 GGUF is checked last.

use epa::model::gguf::{self, GgufData, load_gguf, read_gguf_metadata};
use epa::model::{Arch, ModelConfig};
use half::{bf16, f16};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// A minimal GGUF writer (little-endian, version 3 unless told otherwise).

#[derive(Clone)]
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArr(Vec<String>),
    I32Arr(Vec<i32>),
}

struct Tensor {
    name: String,
    /// GGUF order: dims[0] = columns.
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn write_gguf(version: u32, meta: &[(&str, Meta)], tensors: &[Tensor]) -> Vec<u8> {
    let align = meta.iter().find(|(k, _)| *k == "general.alignment");
    let align = match align {
        Some((_, Meta::U32(a))) => *a as usize,
        _ => 32,
    };
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        put_str(&mut out, k);
        match v {
            Meta::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Bool(b) => {
                out.extend(7u32.to_le_bytes());
                out.push(*b as u8);
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Meta::StrArr(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                a.iter().for_each(|s| put_str(&mut out, s));
            }
            Meta::I32Arr(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                a.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.ty.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += t.data.len().div_ceil(align) * align;
    }
    out.resize(out.len().div_ceil(align) * align, 0);
    for t in tensors {
        out.extend(&t.data);
        out.resize(out.len().div_ceil(align) * align, 0);
    }
    out
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Reference quantisers: each returns (block bytes, the value each element must decode to,
// computed directly from its integer code, and the worst-case error vs the input).

fn round_half(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn pack_nibbles(codes: &[u8]) -> Vec<u8> {
    (0..16).map(|j| codes[j] | (codes[j + 16] << 4)).collect()
}

fn quantize_ref(ty: &str, x: &[f32]) -> (Vec<u8>, Vec<f32>, f32) {
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    let mut tol: f32 = 0.0;
    for b in x.chunks(32) {
        let (mn, mx) = b.iter().fold((f32::MAX, f32::MIN), |(a, c), &v| (a.min(v), c.max(v)));
        let amax = b.iter().fold(0f32, |a, &v| a.max(v.abs()));
        match ty {
            "Q8_0" => {
                let d = round_half(amax / 127.0);
                let codes: Vec<i8> =
                    b.iter().map(|&v| if d == 0.0 { 0 } else { (v / d).round().clamp(-127.0, 127.0) as i8 }).collect();
                bytes.extend(f16::from_f32(d).to_le_bytes());
                bytes.extend(codes.iter().map(|&c| c as u8));
                expect.extend(codes.iter().map(|&c| c as f32 * d));
                tol = tol.max(d * 0.51);
            }
            "Q4_0" | "Q5_0" => {
                let levels = if ty == "Q4_0" { 8.0 } else { 16.0 };
                let d = round_half(amax / levels);
                let maxc = 2.0 * levels - 1.0;
                let codes: Vec<u8> = b
                    .iter()
                    .map(|&v| if d == 0.0 { levels as u8 } else { (v / d + levels).round().clamp(0.0, maxc) as u8 })
                    .collect();
                bytes.extend(f16::from_f32(d).to_le_bytes());
                if ty == "Q5_0" {
                    let qh: u32 = codes.iter().enumerate().map(|(i, &c)| ((c as u32 >> 4) & 1) << i).sum();
                    bytes.extend(qh.to_le_bytes());
                }
                bytes.extend(pack_nibbles(&codes.iter().map(|c| c & 15).collect::<Vec<_>>()));
                expect.extend(codes.iter().map(|&c| (c as f32 - levels) * d));
                tol = tol.max(d * 1.01);
            }
            "Q4_1" | "Q5_1" => {
                let maxc = if ty == "Q4_1" { 15.0 } else { 31.0 };
                let d = round_half((mx - mn) / maxc);
                let m = round_half(mn);
                let codes: Vec<u8> = b
                    .iter()
                    .map(|&v| if d == 0.0 { 0 } else { ((v - m) / d).round().clamp(0.0, maxc) as u8 })
                    .collect();
                bytes.extend(f16::from_f32(d).to_le_bytes());
                bytes.extend(f16::from_f32(m).to_le_bytes());
                if ty == "Q5_1" {
                    let qh: u32 = codes.iter().enumerate().map(|(i, &c)| ((c as u32 >> 4) & 1) << i).sum();
                    bytes.extend(qh.to_le_bytes());
                }
                bytes.extend(pack_nibbles(&codes.iter().map(|c| c & 15).collect::<Vec<_>>()));
                expect.extend(codes.iter().map(|&c| c as f32 * d + m));
                tol = tol.max(d * 0.51 + (mn - m).abs() + 1e-3 * (mx - mn).abs());
            }
            _ => unreachable!(),
        }
    }
    (bytes, expect, tol)
}

fn type_id(name: &str) -> u32 {
    match name {
        "F32" => 0,
        "F16" => 1,
        "Q4_0" => 2,
        "Q4_1" => 3,
        "Q5_0" => 6,
        "Q5_1" => 7,
        "Q8_0" => 8,
        "BF16" => 30,
        _ => unreachable!(),
    }
}

/// (bytes, exact expected decode, tolerance vs the input) for any test type.
fn encode(ty: &str, x: &[f32]) -> (Vec<u8>, Vec<f32>, f32) {
    match ty {
        "F32" => (f32_bytes(x), x.to_vec(), 0.0),
        "F16" => {
            let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            (h.iter().flat_map(|v| v.to_le_bytes()).collect(), h.iter().map(|v| v.to_f32()).collect(), 1e-3)
        }
        "BF16" => {
            let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            (h.iter().flat_map(|v| v.to_le_bytes()).collect(), h.iter().map(|v| v.to_f32()).collect(), 8e-3)
        }
        q => quantize_ref(q, x),
    }
}

const TEST_TYPES: [&str; 8] = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"];

#[test]
fn every_supported_type_decodes_to_its_reference_values() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (3usize, 64usize);
    let mut x = values(rows * cols, 7);
    x[..32].iter_mut().for_each(|v| *v = 0.0); // an all-zero block: scale 0 must decode to zeros
    let mut tensors = Vec::new();
    let mut expected = Vec::new();
    for ty in TEST_TYPES {
        let (data, exact, tol) = encode(ty, &x);
        tensors.push(Tensor { name: ty.into(), dims: vec![cols as u64, rows as u64], ty: type_id(ty), data });
        expected.push((ty, exact, tol));
    }
    let path = write_file(
        dir.path(),
        "types.gguf",
        &write_gguf(3, &[("general.architecture", Meta::Str("test".into()))], &tensors),
    );
    let g = GgufData::open(&path).unwrap();
    for (ty, exact, tol) in expected {
        let (shape, got) = g.tensor_f32(ty).unwrap();
        assert_eq!(shape, vec![rows, cols], "{ty}: shape is GGUF dims reversed");
        for (i, ((g, e), x)) in got.iter().zip(&exact).zip(&x).enumerate() {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0), "{ty}[{i}]: decoded {g}, reference {e}");
            assert!((g - x).abs() <= tol + 1e-6, "{ty}[{i}]: decoded {g}, input {x}, tolerance {tol}");
        }
        assert!(got[..32].iter().all(|&v| v == 0.0), "{ty}: zero block");
    }
}

#[test]
fn custom_alignment_and_version_2_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let x = values(96, 3);
    let tensors: Vec<Tensor> = ["a", "b", "c"]
        .iter()
        .map(|n| Tensor { name: n.to_string(), dims: vec![32, 1], ty: 0, data: f32_bytes(&x[..32]) })
        .collect();
    for (version, align) in [(2u32, 64u32), (3, 256), (3, 32)] {
        let meta = [("general.alignment", Meta::U32(align))];
        let path = write_file(dir.path(), "aligned.gguf", &write_gguf(version, &meta, &tensors));
        let g = GgufData::open(&path).unwrap();
        assert_eq!((g.file.version, g.file.alignment), (version, align as u64));
        assert_eq!(g.file.data_offset % align as u64, 0);
        for n in ["a", "b", "c"] {
            assert_eq!(g.tensor_f32(n).unwrap().1, &x[..32]);
        }
    }
    let bad = write_gguf(3, &[("general.alignment", Meta::U32(48))], &[]);
    let e = err_of(read_gguf_metadata(&write_file(dir.path(), "align48.gguf", &bad)));
    assert!(e.contains("power of two"), "{e}");
}

#[test]
fn block_layouts_match_llama_cpp_gguf_py() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/quants.gguf");
    let g = GgufData::open(&path).unwrap();
    let types = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"];
    for ty in types {
        let info = g.file.tensor(ty).unwrap();
        assert_eq!(info.ty.name(), ty);
        let (shape, got) = g.tensor_f32(ty).unwrap();
        let (eshape, want) = g.tensor_f32(&format!("{ty}.expected")).unwrap();
        assert_eq!(shape, eshape);
        assert_eq!(shape, vec![2, 512]);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{ty}: relative difference {worst} from gguf-py");
        assert!(want.iter().any(|&v| v != 0.0), "{ty}: fixture is not all zeros");
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny model in llama.cpp's naming and layout.

/// llama.cpp's converter: `w.reshape(n_head, 2, D/2, cols).swapaxes(1, 2).reshape(w.shape)`,
/// written as the index arithmetic of that numpy expression.
fn converter_permute(w: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = w.len() / rows;
    let d = rows / n_head;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for i in 0..d / 2 {
                // source element (h, a, i) of the reshaped array lands at (h, i, a) after swapaxes
                let src = h * d + a * (d / 2) + i;
                let dst = h * d + i * 2 + a;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

struct TinySpec {
    arch: &'static str,
    tied: bool,
    biases: bool,
}

const HIDDEN: usize = 16;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const FFN: usize = 32;
const LAYERS: usize = 2;

fn fixture_tokenizer_json() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama/tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Tokens, merges and token types of the tiny-llama fixture tokenizer, as GGUF metadata.
fn tokenizer_meta(pre: &str) -> Vec<(&'static str, Meta)> {
    let tj = fixture_tokenizer_json();
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
        .collect();
    let special: Vec<u64> = tj["added_tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let types: Vec<i32> = (0..tokens.len()).map(|i| if special.contains(&(i as u64)) { 3 } else { 1 }).collect();
    vec![
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str(pre.into())),
        ("tokenizer.ggml.tokens", Meta::StrArr(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32Arr(types)),
        ("tokenizer.ggml.merges", Meta::StrArr(merges)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.padding_token_id", Meta::U32(0)),
    ]
}

/// A Hugging Face tensor: name, shape, values.
type HfTensor = (String, Vec<usize>, Vec<f32>);

/// Writes a tiny model; returns its path and the Hugging Face tensors it must load as.
fn tiny_model(dir: &Path, spec: &TinySpec) -> (PathBuf, Vec<HfTensor>) {
    let vocab = fixture_tokenizer_json()["model"]["vocab"].as_object().unwrap().len();
    let a = spec.arch;
    let mut meta: Vec<(&str, Meta)> =
        vec![("general.architecture", Meta::Str(a.into())), ("general.name", Meta::Str("tiny".into()))];
    let arch_keys: [(&str, Meta); 9] = [
        ("block_count", Meta::U32(LAYERS as u32)),
        ("context_length", Meta::U32(256)),
        ("embedding_length", Meta::U32(HIDDEN as u32)),
        ("feed_forward_length", Meta::U32(FFN as u32)),
        ("attention.head_count", Meta::U32(HEADS as u32)),
        ("attention.head_count_kv", Meta::U32(KV_HEADS as u32)),
        ("rope.freq_base", Meta::F32(100000.0)),
        ("attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("rope.dimension_count", Meta::U32(HEAD_DIM as u32)),
    ];
    let arch_keys: Vec<(&'static str, Meta)> =
        arch_keys.into_iter().map(|(k, v)| (&*Box::leak(format!("{a}.{k}").into_boxed_str()), v)).collect();
    meta.extend(arch_keys);
    meta.extend(tokenizer_meta("gpt2"));
    meta.push(("tokenizer.chat_template", Meta::Str("{{ messages }}".into())));
    meta.push(("tokenizer.ggml.add_bos_token", Meta::Bool(false)));

    let mut hf = Vec::new();
    let mut tensors = Vec::new();
    let mut seed = 0;
    let mut add = |gguf: String, hf_name: String, shape: Vec<usize>, permute_heads: Option<usize>| {
        seed += 1;
        let n: usize = shape.iter().product();
        let v = values(n, seed);
        let stored = match permute_heads {
            Some(h) if a == "llama" => converter_permute(&v, shape[0], h),
            _ => v.clone(),
        };
        tensors.push(Tensor {
            name: gguf,
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty: 0,
            data: f32_bytes(&stored),
        });
        hf.push((hf_name, shape, v));
    };
    add("token_embd.weight".into(), "model.embed_tokens.weight".into(), vec![vocab, HIDDEN], None);
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for l in 0..LAYERS {
        let g = |s: &str| format!("blk.{l}.{s}");
        let h = |s: &str| format!("model.layers.{l}.{s}");
        add(g("attn_norm.weight"), h("input_layernorm.weight"), vec![HIDDEN], None);
        add(g("attn_q.weight"), h("self_attn.q_proj.weight"), vec![q, HIDDEN], Some(HEADS));
        add(g("attn_k.weight"), h("self_attn.k_proj.weight"), vec![kv, HIDDEN], Some(KV_HEADS));
        add(g("attn_v.weight"), h("self_attn.v_proj.weight"), vec![kv, HIDDEN], None);
        if spec.biases {
            add(g("attn_q.bias"), h("self_attn.q_proj.bias"), vec![q], Some(HEADS));
            add(g("attn_k.bias"), h("self_attn.k_proj.bias"), vec![kv], Some(KV_HEADS));
            add(g("attn_v.bias"), h("self_attn.v_proj.bias"), vec![kv], None);
        }
        add(g("attn_output.weight"), h("self_attn.o_proj.weight"), vec![HIDDEN, q], None);
        add(g("ffn_norm.weight"), h("post_attention_layernorm.weight"), vec![HIDDEN], None);
        add(g("ffn_gate.weight"), h("mlp.gate_proj.weight"), vec![FFN, HIDDEN], None);
        add(g("ffn_up.weight"), h("mlp.up_proj.weight"), vec![FFN, HIDDEN], None);
        add(g("ffn_down.weight"), h("mlp.down_proj.weight"), vec![HIDDEN, FFN], None);
    }
    add("output_norm.weight".into(), "model.norm.weight".into(), vec![HIDDEN], None);
    if !spec.tied {
        add("output.weight".into(), "lm_head.weight".into(), vec![vocab, HIDDEN], None);
    }
    let path = write_file(dir, &format!("tiny-{a}-{}.gguf", spec.tied), &write_gguf(3, &meta, &tensors));
    (path, hf)
}

fn assert_tensors_equal(got: &[(String, Vec<usize>, Vec<f32>)], want: &[(String, Vec<usize>, Vec<f32>)]) {
    assert_eq!(got.len(), want.len());
    for (name, shape, v) in want {
        let (_, gs, gv) = got.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(gs, shape, "{name}: shape");
        assert!(gv == v, "{name}: values differ from the Hugging Face original");
    }
}

#[test]
fn llama_gguf_loads_as_hugging_face_tensors_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let (path, hf) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: true, biases: false });
    let m = load_gguf(&path).unwrap();
    // q/k come back exactly as HF wrote them: unpermute inverts the converter's permute.
    assert_tensors_equal(&m.tensors, &hf);
    assert!(!m.tensors.iter().any(|(n, _, _)| n == "lm_head.weight"), "tied: no lm_head");
    let vocab = hf[0].1[0];
    let want = ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: HIDDEN,
        intermediate_size: FFN,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        num_key_value_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        rms_norm_eps: 1e-5,
        rope_theta: 100000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        attention_bias: false,
        o_bias: false,
        mlp_bias: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(0),
    };
    assert_eq!(m.config, want);
    assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(m.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(m.eos_token.as_deref(), Some("<|im_end|>"));
}

#[test]
fn untied_llama_with_biases_and_qwen2_without_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let (path, hf) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: false, biases: true });
    let m = load_gguf(&path).unwrap();
    assert_tensors_equal(&m.tensors, &hf);
    assert!(!m.config.tie_word_embeddings);
    assert!(m.config.attention_bias);
    assert!(m.tensors.iter().any(|(n, s, _)| n == "lm_head.weight" && s == &vec![hf[0].1[0], HIDDEN]));

    // qwen2 GGUFs are converted without the q/k permutation: rows stay as stored.
    let (path, hf) = tiny_model(dir.path(), &TinySpec { arch: "qwen2", tied: true, biases: true });
    let m = load_gguf(&path).unwrap();
    assert_tensors_equal(&m.tensors, &hf);
    assert_eq!(m.config.arch, Arch::Qwen2);
    assert!(m.config.attention_bias && !m.config.o_bias);
}

#[test]
fn permute_and_unpermute_are_inverse_and_match_the_converter() {
    for (rows, cols, heads) in [(12, 5, 3), (64, 1, 1), (576, 3, 9), (192, 2, 3)] {
        let x = values(rows * cols, rows as u64);
        let p = gguf::names::permute_rows(&x, rows, heads).unwrap();
        assert_eq!(p, converter_permute(&x, rows, heads), "permute_rows is llama.cpp's permute");
        assert_eq!(gguf::names::unpermute_rows(&p, rows, heads).unwrap(), x);
        assert_eq!(
            gguf::names::permute_rows(&gguf::names::unpermute_rows(&x, rows, heads).unwrap(), rows, heads).unwrap(),
            x
        );
        assert_ne!(p, x);
    }
    // Concretely, head_dim 6: GGUF row order is HF rows [0, 3, 1, 4, 2, 5] (adjacent RoPE pairs).
    let x: Vec<f32> = (0..6).map(|i| i as f32).collect();
    assert_eq!(gguf::names::permute_rows(&x, 6, 1).unwrap(), vec![0., 3., 1., 4., 2., 5.]);
    assert!(gguf::names::unpermute_rows(&x, 6, 4).is_err(), "rows not divisible by heads");
}

#[test]
fn name_mapping_covers_llama_cpp_names() {
    let cases = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.11.attn_k.bias", "model.layers.11.self_attn.k_proj.bias"),
        ("blk.2.attn_v.weight", "model.layers.2.self_attn.v_proj.weight"),
        ("blk.2.attn_output.weight", "model.layers.2.self_attn.o_proj.weight"),
        ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
        ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ("blk.29.attn_norm.weight", "model.layers.29.input_layernorm.weight"),
        ("blk.29.ffn_norm.weight", "model.layers.29.post_attention_layernorm.weight"),
    ];
    for (g, h) in cases {
        assert_eq!(gguf::names::hf_name(g).as_deref(), Some(h), "{g}");
    }
    for g in ["rope_freqs.weight", "blk.x.attn_q.weight", "blk.0.attn_qkv.weight", "blk.0.attn_q.scale"] {
        assert_eq!(gguf::names::hf_name(g), None, "{g}");
    }
}

#[test]
fn tokenizer_equals_the_hugging_face_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: true, biases: false });
    let m = load_gguf(&path).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama/tokenizer.json");
    let hf = tokenizers::Tokenizer::from_file(&fixture).unwrap();
    let texts = [
        "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
        "Hello, world! It's 2024: 12345 apples (and   spaces)\n\n\ttabs",
        "héllo ünïcode — “quotes” 日本語 🙂",
        "<|endoftext|><|im_end|>x<|im_start|>",
        "",
    ];
    for t in texts {
        let a = m.tokenizer.encode(t, false).unwrap();
        let b = hf.encode(t, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "ids for {t:?}");
        assert_eq!(m.tokenizer.decode(a.get_ids(), false).unwrap(), t, "decode round trip for {t:?}");
    }
    assert_eq!(m.tokenizer.get_vocab_size(true), hf.get_vocab_size(true));
    let specials = m.tokenizer.get_added_tokens_decoder();
    assert!(specials.values().filter(|t| t.special).count() == 3);
    // special tokens are skipped when decoding with skip_special_tokens
    let ids = m.tokenizer.encode("<|im_start|>hi<|im_end|>", false).unwrap();
    assert_eq!(m.tokenizer.decode(ids.get_ids(), true).unwrap(), "hi");
}

#[test]
fn smollm_pre_tokenizer_splits_digits_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = vec![("general.architecture", Meta::Str("test".into()))];
    meta.extend(tokenizer_meta("smollm"));
    let path = write_file(dir.path(), "tok.gguf", &write_gguf(3, &meta, &[]));
    let f = read_gguf_metadata(&path).unwrap();
    let tok = gguf::tokenizer::build_tokenizer(&f).unwrap();
    let enc = tok.encode("x 2024", false).unwrap();
    let toks: Vec<&str> = enc.get_tokens().iter().map(|s| s.as_str()).collect();
    assert_eq!(&toks[toks.len() - 4..], &["2", "0", "2", "4"]);
    // add_bos_token absent: nothing is added even with add_special_tokens.
    assert_eq!(tok.encode("x", true).unwrap().get_ids(), tok.encode("x", false).unwrap().get_ids());
    let with_bos = {
        let mut meta = vec![("tokenizer.ggml.add_bos_token", Meta::Bool(true))];
        meta.extend(tokenizer_meta("smollm"));
        write_file(dir.path(), "bos.gguf", &write_gguf(3, &meta, &[]))
    };
    let tok = gguf::tokenizer::build_tokenizer(&read_gguf_metadata(&with_bos).unwrap()).unwrap();
    let plain = tok.encode("x", false).unwrap().get_ids().to_vec();
    assert_eq!(tok.encode("x", true).unwrap().get_ids(), &[&[1u32][..], &plain[..]].concat());
    let unknown_pre = {
        let mut meta = vec![("general.architecture", Meta::Str("test".into()))];
        meta.extend(tokenizer_meta("deepseek-coder"));
        write_file(dir.path(), "tok2.gguf", &write_gguf(3, &meta, &[]))
    };
    let err = gguf::tokenizer::build_tokenizer(&read_gguf_metadata(&unknown_pre).unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("deepseek-coder"), "{err:#}");
}

// ---------------------------------------------------------------------------------------------
// Errors: named file and tensor, never a panic.

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn header_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_gguf(3, &[("general.architecture", Meta::Str("llama".into()))], &[]);
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    let p = write_file(dir.path(), "magic.gguf", &bad_magic);
    let e = err_of(read_gguf_metadata(&p));
    assert!(e.contains("magic.gguf") && e.contains("magic"), "{e}");

    for (v, needle) in [(1u32, "version 1"), (7, "unknown GGUF version 7"), (3u32.swap_bytes(), "big-endian")] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        let p = write_file(dir.path(), "version.gguf", &b);
        let e = err_of(read_gguf_metadata(&p));
        assert!(e.contains(needle) && e.contains("version.gguf"), "{e}");
    }
    assert!(read_gguf_metadata(&write_file(dir.path(), "v2.gguf", &write_gguf(2, &[], &[]))).is_ok());

    let e = err_of(read_gguf_metadata(&dir.path().join("absent.gguf")));
    assert!(e.contains("absent.gguf"), "{e}");

    // A header claiming 2^60 metadata entries must not allocate them.
    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err_of(read_gguf_metadata(&write_file(dir.path(), "huge.gguf", &huge)));
    assert!(e.contains("corrupted"), "{e}");
    // ...nor a string claiming 2^60 bytes.
    let mut long = good.clone();
    long[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err_of(read_gguf_metadata(&write_file(dir.path(), "long.gguf", &long)));
    assert!(e.contains("exceeds"), "{e}");
}

#[test]
fn unsupported_tensor_type_names_file_tensor_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: true, biases: false });
    let mut bytes = std::fs::read(&path).unwrap();
    // Re-type blk.1.ffn_up.weight (F32, id 0) as IQ2_XXS (id 16) in its tensor info.
    let name = b"blk.1.ffn_up.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8; // n_dims, two dims
    assert_eq!(&bytes[type_at..type_at + 4], &0u32.to_le_bytes());
    bytes[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes());
    let p = write_file(dir.path(), "iq.gguf", &bytes);
    let e = err_of(load_gguf(&p));
    assert!(e.contains("iq.gguf") && e.contains("blk.1.ffn_up.weight") && e.contains("IQ2_XXS"), "{e}");
}

#[test]
fn unsupported_architecture_and_missing_tensor_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: true, biases: false });
    let bytes = std::fs::read(&path).unwrap();

    let mut renamed = bytes.clone();
    let arch_at = renamed.windows(5).position(|w| w == b"llama").unwrap();
    renamed[arch_at..arch_at + 5].copy_from_slice(b"gemma");
    let e = err_of(load_gguf(&write_file(dir.path(), "gemma.gguf", &renamed)));
    assert!(e.contains("gemma.gguf") && e.contains("\"gemma\"") && e.contains("not supported"), "{e}");

    // Rename a tensor so that layer 1 loses its v projection.
    let mut missing = bytes.clone();
    let at = missing.windows(19).position(|w| w == b"blk.1.attn_v.weight").unwrap();
    missing[at..at + 19].copy_from_slice(b"blk.1.attn_x.weight");
    let e = err_of(load_gguf(&write_file(dir.path(), "missing.gguf", &missing)));
    assert!(e.contains("missing.gguf") && e.contains("blk.1.attn_x.weight"), "{e}");
}

#[test]
fn truncated_and_corrupted_files_error_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_model(dir.path(), &TinySpec { arch: "llama", tied: true, biases: false });
    let bytes = std::fs::read(&path).unwrap();
    assert!(load_gguf(&path).is_ok());
    // Truncation points, in memory (every byte through the header and first metadata entries,
    // then every 37th): the header parse or some tensor's data must fail.
    for n in (0..1024).chain((1024..bytes.len()).step_by(37)).chain([bytes.len() - 1]) {
        let cut = &bytes[..n];
        let complete = gguf::GgufFile::parse(&path, cut)
            .map(|f| f.tensors.iter().all(|t| gguf::decode(&f, cut, t).is_ok()))
            .unwrap_or(false);
        assert!(!complete, "a file cut at {n} of {} bytes was accepted", bytes.len());
    }
    // A sample of truncated files through the full loader: the error names the file.
    let p = dir.path().join("cut.gguf");
    for n in (0..bytes.len()).step_by(bytes.len() / 40) {
        std::fs::write(&p, &bytes[..n]).unwrap();
        let e = err_of(load_gguf(&p));
        assert!(e.contains("cut.gguf"), "cut at {n}: {e}");
    }
    // Random byte corruption of the header and metadata: any outcome but a panic (or an absurd
    // allocation) is acceptable.
    let meta_end = bytes.windows(17).position(|w| w == b"token_embd.weight").unwrap() + 64;
    let mut s = 12345u64;
    let p = dir.path().join("bent.gguf");
    for _ in 0..200 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pos = ((s >> 33) as usize) % meta_end;
            b[pos] = (s >> 20) as u8;
        }
        std::fs::write(&p, &b).unwrap();
        let _ = load_gguf(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// The real model.

#[test]
fn smollm2_135m_instruct_q4_1_loads_with_its_tokenizer() {
    let path = match epa::artifacts::smollm2_gguf() {
        Ok(p) => p,
        Err(e) => panic!("the SmolLM2 GGUF is needed for this test and could not be fetched:\n{e:#}"),
    };
    let t0 = std::time::Instant::now();
    let m = load_gguf(&path).unwrap();
    eprintln!("load_gguf(SmolLM2-135M-Instruct Q4_1): {:.2} s", t0.elapsed().as_secs_f64());

    let c = &m.config;
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.num_attention_heads, 9);
    assert_eq!(c.num_key_value_heads, 3);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c, &ModelConfig::smollm2_135m());
    assert_eq!(c.num_params(), m.tensors.iter().map(|(_, _, v)| v.len()).sum::<usize>());
    assert_eq!(m.tensors.len(), 272);
    let (name, shape, emb) = &m.tensors[0];
    assert_eq!((name.as_str(), shape.as_slice()), ("model.embed_tokens.weight", &[49152usize, 576][..]));
    assert!(emb.iter().all(|v| v.is_finite()) && emb.iter().any(|&v| v != 0.0));

    let text = "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n";
    let ids = m.tokenizer.encode(text, false).unwrap();
    assert_eq!(ids.get_ids(), &[1, 4093, 198, 19161, 582, 6330, 563, 260, 3426, 30, 2, 198, 1, 520, 9531, 198]);
    assert_eq!(m.tokenizer.decode(ids.get_ids(), false).unwrap(), text);
    assert_eq!(m.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(m.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(m.chat_template.as_deref().unwrap().contains("<|im_start|>"));

    // The numpy reference (tests/fixtures/gguf/smollm2_reference.py) used the same prompt ids,
    // and its greedy continuation decodes to its text with this tokenizer.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/smollm2_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ids_of =
        |k: &str| -> Vec<u32> { reference[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    assert_eq!(ids_of("prompt_ids"), ids.get_ids());
    assert_eq!(m.tokenizer.decode(&ids_of("greedy_ids"), false).unwrap(), reference["greedy_text"].as_str().unwrap());
}
