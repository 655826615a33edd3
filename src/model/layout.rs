//! What a forward pass needs besides weights: token ids, position ids and the attention mask, laid
//! out per batch. Masks are data, not hard-wired, so that one prompt can be shared by several
//! responses (each response attends to the prompt and to itself only) as well as the usual padded
//! batch of independent sequences.

/// A batch of token rows `[B, T]` with position ids and a boolean "may attend" relation.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Number of rows `B`.
    pub batch: usize,
    /// Row length `T` in tokens, padding included (at least 1).
    pub len: usize,
    /// `[B, T]` row-major token ids (padding positions hold `pad_id`).
    pub input_ids: Vec<i64>,
    /// `[B, T]` row-major position ids (RoPE positions).
    pub position_ids: Vec<i64>,
    /// `[B, T]` segment of each position: `-1` = padding; keys of segment 0 are visible to every
    /// segment (the shared prompt); a query of segment s > 0 sees segment-0 keys and keys of its own
    /// segment. Plain sequences use segment 0 for everything.
    pub segment: Vec<i32>,
}

impl Layout {
    /// Independent sequences, right-padded to the longest. Causal attention, padding keys masked.
    pub fn padded(seqs: &[&[u32]], pad_id: u32) -> Layout {
        let batch = seqs.len();
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut input_ids = vec![pad_id as i64; batch * len];
        let mut position_ids = vec![0i64; batch * len];
        let mut segment = vec![-1i32; batch * len];
        for (b, s) in seqs.iter().enumerate() {
            for (t, &id) in s.iter().enumerate() {
                input_ids[b * len + t] = id as i64;
                position_ids[b * len + t] = t as i64;
                segment[b * len + t] = 0;
            }
        }
        Layout { batch, len, input_ids, position_ids, segment }
    }

    /// Prefix sharing: row b is `[prompt | response₁ | response₂ | …]`; every response attends
    /// to the prompt and to itself, with positions restarting after the prompt, so each response
    /// sees exactly what it would see as a separate sequence `prompt ⊕ response`.
    pub fn shared_prefix(groups: &[(&[u32], Vec<&[u32]>)], pad_id: u32) -> Layout {
        let batch = groups.len();
        let len =
            groups.iter().map(|(p, rs)| p.len() + rs.iter().map(|r| r.len()).sum::<usize>()).max().unwrap_or(0).max(1);
        let mut input_ids = vec![pad_id as i64; batch * len];
        let mut position_ids = vec![0i64; batch * len];
        let mut segment = vec![-1i32; batch * len];
        for (b, (prompt, responses)) in groups.iter().enumerate() {
            let row = b * len;
            for (t, &id) in prompt.iter().enumerate() {
                input_ids[row + t] = id as i64;
                position_ids[row + t] = t as i64;
                segment[row + t] = 0;
            }
            let mut t = prompt.len();
            for (k, r) in responses.iter().enumerate() {
                for (j, &id) in r.iter().enumerate() {
                    input_ids[row + t] = id as i64;
                    position_ids[row + t] = (prompt.len() + j) as i64;
                    segment[row + t] = k as i32 + 1;
                    t += 1;
                }
            }
        }
        Layout { batch, len, input_ids, position_ids, segment }
    }

    /// The block-sparse attention plan of a prefix-shared layout (`None` for plain padded
    /// sequences, or if the segments are not `[prompt | response… | padding]` rows).
    pub fn blocks(&self) -> Option<AttentionBlocks> {
        let (b, t) = (self.batch, self.len);
        let mut rows = Vec::with_capacity(b);
        let mut any = false;
        for bi in 0..b {
            let seg = &self.segment[bi * t..(bi + 1) * t];
            let prompt = seg.iter().take_while(|&&s| s == 0).count();
            let mut spans = Vec::new();
            let mut i = prompt;
            while i < t && seg[i] > 0 {
                let start = i;
                while i < t && seg[i] == seg[start] {
                    i += 1;
                }
                spans.push((start, i - start));
            }
            if seg[i..].iter().any(|&s| s >= 0) {
                return None;
            }
            any |= !spans.is_empty();
            rows.push((prompt, spans));
        }
        any.then(|| AttentionBlocks::new(t, &rows))
    }

    /// Additive attention bias `[B, T, T]` (row-major): 0 where query i may attend key j,
    /// a large negative number elsewhere. Fully masked rows (padding queries) attend to
    /// themselves so that softmax stays finite; their outputs are never read.
    pub fn attention_bias(&self) -> Vec<f32> {
        let (b, t) = (self.batch, self.len);
        let mut bias = vec![MASKED; b * t * t];
        for bi in 0..b {
            let seg = &self.segment[bi * t..(bi + 1) * t];
            for i in 0..t {
                let row = &mut bias[(bi * t + i) * t..(bi * t + i + 1) * t];
                let si = seg[i];
                if si < 0 {
                    row[i] = 0.0;
                    continue;
                }
                for j in 0..=i {
                    let sj = seg[j];
                    if sj == 0 || sj == si {
                        row[j] = 0.0;
                    }
                }
            }
        }
        bias
    }
}

const MASKED: f32 = -1.0e30;

/// Block-sparse attention for prefix-shared rows: one block per row for the prompt (causal, prompt
/// keys only) and one block per response (its queries; keys = its row's prompt, then itself,
/// causal), instead of a dense `[T × T]` mask most of which is masked out. The work is that of
/// separate sequences minus the repeated prompt. Positions are flat indices `b·T + t`; blocks are
/// padded to the longest prompt / response, padding slots point at a real position and padding
/// queries attend to key 0 only (their outputs are never read).
#[derive(Debug, Clone)]
pub struct AttentionBlocks {
    /// Number of rows, i.e. of prompt blocks (the layout's `B`).
    pub rows: usize,
    /// The longest prompt.
    pub prompt_len: usize,
    /// `[rows · prompt_len]` positions of each row's prompt.
    pub prompt_pos: Vec<i64>,
    /// `[rows, prompt_len, prompt_len]` additive bias (causal).
    pub prompt_bias: Vec<f32>,
    /// Number of response blocks, over all rows.
    pub responses: usize,
    /// The longest response.
    pub response_len: usize,
    /// `[responses · response_len]` positions of each response's tokens (the queries).
    pub response_pos: Vec<i64>,
    /// `[responses · (prompt_len + response_len)]` positions of each response's keys.
    pub key_pos: Vec<i64>,
    /// `[responses, response_len, prompt_len + response_len]` additive bias.
    pub response_bias: Vec<f32>,
    /// `[B · T]`: where each position's output is in `[prompt outputs ; response outputs]`
    /// (rows `rows · prompt_len` then `responses · response_len`).
    pub back: Vec<i64>,
}

impl AttentionBlocks {
    /// `rows[b] = (prompt length, [(start, len)] of its responses)`; `t` = the layout's length.
    fn new(t: usize, rows: &[(usize, Vec<(usize, usize)>)]) -> Self {
        let r = rows.len();
        let lp = rows.iter().map(|x| x.0).max().unwrap_or(0).max(1);
        let lr = rows.iter().flat_map(|x| x.1.iter().map(|s| s.1)).max().unwrap_or(0).max(1);
        let n: usize = rows.iter().map(|x| x.1.len()).sum();
        let s = lp + lr;
        let mut a = AttentionBlocks {
            rows: r,
            prompt_len: lp,
            prompt_pos: Vec::with_capacity(r * lp),
            prompt_bias: vec![MASKED; r * lp * lp],
            responses: n,
            response_len: lr,
            response_pos: Vec::with_capacity(n * lr),
            key_pos: Vec::with_capacity(n * s),
            response_bias: vec![MASKED; n * lr * s],
            back: vec![0; r * t],
        };
        let mut k = 0;
        for (b, (p, spans)) in rows.iter().enumerate() {
            let row = (b * t) as i64;
            for i in 0..lp {
                a.prompt_pos.push(if i < *p { row + i as i64 } else { row });
                let bias = &mut a.prompt_bias[(b * lp + i) * lp..(b * lp + i + 1) * lp];
                if i < *p {
                    bias[..=i].fill(0.0);
                    a.back[b * t + i] = (b * lp + i) as i64;
                } else {
                    bias[0] = 0.0;
                }
            }
            for &(start, len) in spans {
                let first = row + start as i64;
                for i in 0..lr {
                    a.response_pos.push(if i < len { first + i as i64 } else { first });
                }
                for j in 0..lp {
                    a.key_pos.push(if j < *p { row + j as i64 } else { row });
                }
                for j in 0..lr {
                    a.key_pos.push(if j < len { first + j as i64 } else { first });
                }
                for i in 0..lr {
                    let bias = &mut a.response_bias[(k * lr + i) * s..(k * lr + i + 1) * s];
                    if i < len {
                        bias[..*p].fill(0.0);
                        bias[lp..=lp + i].fill(0.0);
                        a.back[b * t + start + i] = (r * lp + k * lr + i) as i64;
                    } else {
                        bias[0] = 0.0;
                    }
                }
                k += 1;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_layouts_have_no_blocks() {
        assert!(Layout::padded(&[&[1, 2, 3], &[4]], 0).blocks().is_none());
    }

    #[test]
    fn shared_prefix_blocks_see_the_prompt_and_themselves() {
        // Row 0: prompt [1 2], responses [3 4 5] and [6]; row 1: prompt [7], response [8 9].
        let groups: Vec<(&[u32], Vec<&[u32]>)> = vec![(&[1, 2], vec![&[3, 4, 5], &[6]]), (&[7], vec![&[8, 9]])];
        let l = Layout::shared_prefix(&groups, 0);
        let a = l.blocks().expect("shared rows have blocks");
        let t = l.len as i64; // 6
        assert_eq!((a.rows, a.prompt_len, a.responses, a.response_len), (2, 2, 3, 3));
        assert_eq!(a.prompt_pos, vec![0, 1, t, t]);
        assert_eq!(a.response_pos, vec![2, 3, 4, 5, 5, 5, t + 1, t + 2, t + 1]);
        // Keys of response 1 (row 0, token 6 at position 5): the prompt, then itself.
        assert_eq!(&a.key_pos[5..10], &[0, 1, 5, 5, 5]);
        let visible = |k: usize, i: usize| -> Vec<usize> {
            let s = a.prompt_len + a.response_len;
            (0..s).filter(|&j| a.response_bias[(k * a.response_len + i) * s + j] == 0.0).collect()
        };
        assert_eq!(visible(0, 2), vec![0, 1, 2, 3, 4]); // third token of response 0: prompt + 3 own keys
        assert_eq!(visible(1, 0), vec![0, 1, 2]); // response 1: prompt + itself, not response 0
        assert_eq!(visible(2, 1), vec![0, 2, 3]); // row 1: one prompt token (slot 1 is padding)
        // Every real position maps back to the output row that computed it.
        assert_eq!(a.back[0..6], [0, 1, 4, 5, 6, 7]);
        assert_eq!(a.back[6], 2);
        assert_eq!(a.back[7..9], [10, 11]);
    }
}
