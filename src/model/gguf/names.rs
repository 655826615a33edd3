//! llama.cpp tensor names → Hugging Face parameter names, and the q/k row permutation.
//!
//! ## The q/k permutation (llama architecture only)
//! Hugging Face Llama applies RoPE in the *rotate-half* layout: within each head of `head_dim = D`
//! rows, row `r < D/2` pairs with row `r + D/2`. llama.cpp's `llama` architecture rotates
//! *adjacent* pairs (rows `2i`, `2i+1`), so `convert_hf_to_gguf.py` permutes the rows of `q_proj` and
//! `k_proj` (weights and biases) per head:
//!
//! ```text
//! w.reshape(n_head, 2, D/2, …).swapaxes(1, 2).reshape(w.shape)
//! ```
//!
//! i.e. GGUF row `h*D + 2*i + j` = HF row `h*D + j*D/2 + i` (for `i < D/2`, `j ∈ {0, 1}`), with
//! `n_head = head_count` for q and `head_count_kv` for k. [`unpermute_rows`] inverts it, so the
//! weights returned are exactly the Hugging Face ones and a rotate-half RoPE model computes what
//! llama.cpp computes. [`permute_rows`] is the converter's direction (for tests and writers).
//! The `qwen2` architecture is converted without the permutation (llama.cpp runs it with NeoX-style
//! rotate-half RoPE), so its q/k rows are left as they are.

use anyhow::{Result, bail};

/// The Hugging Face name of a llama.cpp tensor name, or `None` if there is no counterpart.
pub fn hf_name(gguf: &str) -> Option<String> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Which permutation a tensor needs when loaded from a `llama` GGUF: `Some(heads)` for
/// `attn_q` (heads = head_count) and `attn_k` (heads = head_count_kv), weights and biases.
pub fn qk_heads(gguf: &str, n_head: usize, n_head_kv: usize) -> Option<usize> {
    let part = gguf.strip_prefix("blk.")?.split_once('.')?.1.rsplit_once('.')?.0;
    match part {
        "attn_q" => Some(n_head),
        "attn_k" => Some(n_head_kv),
        _ => None,
    }
}

/// Maps a row index between layouts. `to_hf = true`: the HF row that GGUF row `r` holds.
fn row_map(r: usize, head_dim: usize, to_hf: bool) -> usize {
    let (h, within) = (r / head_dim, r % head_dim);
    let half = head_dim / 2;
    let mapped = if to_hf {
        // GGUF within = 2i + j  →  HF within = j*half + i
        (within % 2) * half + within / 2
    } else {
        // HF within = j*half + i  →  GGUF within = 2i + j
        (within % half) * 2 + within / half
    };
    h * head_dim + mapped
}

fn remap_rows(data: &[f32], rows: usize, n_head: usize, to_hf: bool) -> Result<Vec<f32>> {
    if n_head == 0
        || !rows.is_multiple_of(n_head)
        || !(rows / n_head).is_multiple_of(2)
        || !data.len().is_multiple_of(rows.max(1))
    {
        bail!(
            "cannot permute q/k rows: {rows} rows, {} values, {n_head} heads (need an even head_dim dividing the rows)",
            data.len()
        );
    }
    let cols = data.len() / rows;
    let head_dim = rows / n_head;
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        let dst = if to_hf { row_map(r, head_dim, true) } else { r };
        let src = if to_hf { r } else { row_map(r, head_dim, true) };
        // to_hf: GGUF row r goes to HF row dst. Otherwise: HF row src (the one GGUF row r holds).
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
    }
    Ok(out)
}

/// Inverts llama.cpp's q/k permutation: GGUF-layout rows (adjacent RoPE pairs) → Hugging Face rows
/// (rotate-half). `data` is row-major `[rows, cols]` (a bias is `cols = 1`).
pub fn unpermute_rows(data: &[f32], rows: usize, n_head: usize) -> Result<Vec<f32>> {
    remap_rows(data, rows, n_head, true)
}

/// llama.cpp's `permute(w, n_head)`: Hugging Face rows → GGUF rows (the converter's direction).
pub fn permute_rows(data: &[f32], rows: usize, n_head: usize) -> Result<Vec<f32>> {
    remap_rows(data, rows, n_head, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_maps_are_inverse() {
        for d in [2, 4, 8, 64] {
            for r in 0..3 * d {
                let hf = row_map(r, d, true);
                assert_eq!(row_map(hf, d, false), r);
            }
        }
    }
}
