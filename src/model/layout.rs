//! What a forward pass needs besides weights: token ids, position ids and the attention mask, laid
//! out per batch. Masks are data, not hard-wired, so that one prompt can be shared by several
//! responses (each response attends to the prompt and to itself only) as well as the usual padded
//! batch of independent sequences.

/// A batch of token rows `[B, T]` with position ids and a boolean "may attend" relation.
#[derive(Debug, Clone)]
pub struct Layout {
    pub batch: usize,
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
        let len = groups
            .iter()
            .map(|(p, rs)| p.len() + rs.iter().map(|r| r.len()).sum::<usize>())
            .max()
            .unwrap_or(0)
            .max(1);
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

    /// Additive attention bias `[B, T, T]` (row-major): 0 where query i may attend key j,
    /// a large negative number elsewhere. Fully masked rows (padding queries) attend to
    /// themselves so that softmax stays finite; their outputs are never read.
    pub fn attention_bias(&self) -> Vec<f32> {
        const MASKED: f32 = -1.0e30;
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
