//! ggml tensor types and their dequantisation to f32.
//!
//! Block layouts (all little-endian; `f16` is IEEE half):
//!
//! | type | elems/block | bytes | layout | value of element `i` |
//! |---|---|---|---|---|
//! | Q4_0 | 32 | 18 | `d:f16, qs[16]` | `(nib(i) - 8) * d` |
//! | Q4_1 | 32 | 20 | `d:f16, m:f16, qs[16]` | `nib(i) * d + m` |
//! | Q5_0 | 32 | 22 | `d:f16, qh:u32, qs[16]` | `((nib(i) \| bit_i(qh) << 4) - 16) * d` |
//! | Q5_1 | 32 | 24 | `d:f16, m:f16, qh:u32, qs[16]` | `(nib(i) \| bit_i(qh) << 4) * d + m` |
//! | Q8_0 | 32 | 34 | `d:f16, qs:i8[32]` | `qs[i] * d` |
//!
//! where `nib(i)` is the low nibble of `qs[i]` for `i < 16` and the high nibble of `qs[i - 16]`
//! for `i >= 16`. The k-quants (Q2_K … Q6_K) use 256-element super-blocks split into sub-blocks
//! with their own 4/6/8-bit scales; their layouts are documented on each function below.

use anyhow::{Result, bail};
use half::{bf16, f16};

/// A ggml tensor type, by its numeric id in the GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// IEEE half float (id 1).
    F16,
    /// 4-bit, 32-element blocks with one f16 scale (id 2).
    Q4_0,
    /// 4-bit, 32-element blocks with an f16 scale and minimum (id 3).
    Q4_1,
    /// 5-bit, 32-element blocks with one f16 scale (id 6).
    Q5_0,
    /// 5-bit, 32-element blocks with an f16 scale and minimum (id 7).
    Q5_1,
    /// 8-bit, 32-element blocks with one f16 scale (id 8).
    Q8_0,
    /// 8-bit blocks with a scale and a sum (id 9): llama.cpp's dot-product operand; sized, not decoded.
    Q8_1,
    /// 2-bit k-quant, 256-element super-blocks (id 10).
    Q2K,
    /// 3-bit k-quant, 256-element super-blocks (id 11).
    Q3K,
    /// 4-bit k-quant, 256-element super-blocks (id 12).
    Q4K,
    /// 5-bit k-quant, 256-element super-blocks (id 13).
    Q5K,
    /// 6-bit k-quant, 256-element super-blocks (id 14).
    Q6K,
    /// 8-bit k-quant with block sums (id 15): llama.cpp's dot-product operand; sized, not decoded.
    Q8K,
    /// 8-bit integer (id 24); sized, not decoded.
    I8,
    /// 16-bit integer (id 25); sized, not decoded.
    I16,
    /// 32-bit integer (id 26); sized, not decoded.
    I32,
    /// 64-bit integer (id 27); sized, not decoded.
    I64,
    /// 64-bit float (id 28).
    F64,
    /// bfloat16 (id 30).
    BF16,
    /// Any other id (IQ*, TQ*, MXFP4, …): its data cannot be sized or decoded here.
    Other(u32),
}

impl GgmlType {
    /// The type of a GGUF tensor-info type id; ids not listed here become [`GgmlType::Other`].
    pub fn from_id(id: u32) -> GgmlType {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            other => Other(other),
        }
    }

    /// The GGUF type id (the inverse of [`GgmlType::from_id`]).
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            Other(id) => id,
        }
    }

    /// The name llama.cpp uses (`Q4_1`, `Q6_K`, …).
    pub fn name(self) -> String {
        use GgmlType::*;
        match self {
            F32 => "F32".into(),
            F16 => "F16".into(),
            Q4_0 => "Q4_0".into(),
            Q4_1 => "Q4_1".into(),
            Q5_0 => "Q5_0".into(),
            Q5_1 => "Q5_1".into(),
            Q8_0 => "Q8_0".into(),
            Q8_1 => "Q8_1".into(),
            Q2K => "Q2_K".into(),
            Q3K => "Q3_K".into(),
            Q4K => "Q4_K".into(),
            Q5K => "Q5_K".into(),
            Q6K => "Q6_K".into(),
            Q8K => "Q8_K".into(),
            I8 => "I8".into(),
            I16 => "I16".into(),
            I32 => "I32".into(),
            I64 => "I64".into(),
            F64 => "F64".into(),
            BF16 => "BF16".into(),
            Other(id) => match id {
                16 => "IQ2_XXS".into(),
                17 => "IQ2_XS".into(),
                18 => "IQ3_XXS".into(),
                19 => "IQ1_S".into(),
                20 => "IQ4_NL".into(),
                21 => "IQ3_S".into(),
                22 => "IQ2_S".into(),
                23 => "IQ4_XS".into(),
                29 => "IQ1_M".into(),
                34 => "TQ1_0".into(),
                35 => "TQ2_0".into(),
                39 => "MXFP4".into(),
                _ => format!("unknown type id {id}"),
            },
        }
    }

    /// (elements per block, bytes per block), when known.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Other(_) => return None,
        })
    }

    /// Whether [`dequantize`] decodes this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | F64 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K)
    }

    /// Bytes that `n_elems` elements occupy, or `None` if unknown / not a whole number of blocks.
    pub fn byte_size(self, n_elems: u64) -> Option<u64> {
        let (blk, bytes) = self.block_layout()?;
        if !n_elems.is_multiple_of(blk as u64) {
            return None;
        }
        (n_elems / blk as u64).checked_mul(bytes as u64)
    }
}

/// The types [`dequantize`] supports, as a list for error messages.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// Decodes `n_elems` elements of type `ty` from `bytes` (exactly `ty.byte_size(n_elems)` bytes).
/// Errors (never panics) on an unsupported type or a length mismatch.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elems: usize) -> Result<Vec<f32>> {
    if !ty.can_dequantize() {
        bail!("tensor type {} is not supported (supported: {SUPPORTED_TYPES})", ty.name());
    }
    let (blk, bsize) = ty.block_layout().expect("supported types have a layout");
    if !n_elems.is_multiple_of(blk) {
        bail!("{} elements are not a whole number of {}-element {} blocks", n_elems, blk, ty.name());
    }
    let need = (n_elems / blk) * bsize;
    if bytes.len() != need {
        bail!("{} data is {} bytes, expected {need} for {n_elems} elements", ty.name(), bytes.len());
    }
    let mut out = vec![0f32; n_elems];
    let blocks = bytes.chunks_exact(bsize).zip(out.chunks_exact_mut(blk));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, o)| o[0] = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::BF16 => blocks.for_each(|(b, o)| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::F64 => blocks.for_each(|(b, o)| o[0] = f64::from_le_bytes(b.try_into().unwrap()) as f32),
        GgmlType::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
        GgmlType::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
        GgmlType::Q5_0 => blocks.for_each(|(b, o)| q5_0(b, o)),
        GgmlType::Q5_1 => blocks.for_each(|(b, o)| q5_1(b, o)),
        GgmlType::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
        GgmlType::Q2K => blocks.for_each(|(b, o)| q2_k(b, o)),
        GgmlType::Q3K => blocks.for_each(|(b, o)| q3_k(b, o)),
        GgmlType::Q4K => blocks.for_each(|(b, o)| q4_k(b, o)),
        GgmlType::Q5K => blocks.for_each(|(b, o)| q5_k(b, o)),
        GgmlType::Q6K => blocks.for_each(|(b, o)| q6_k(b, o)),
        _ => unreachable!("checked by can_dequantize"),
    }
    Ok(out)
}

#[inline]
fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 32 4-bit codes of a 16-byte array: low nibbles first, then high nibbles.
#[inline]
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    qs[..16].iter().map(|q| q & 0x0F).chain(qs[..16].iter().map(|q| q >> 4))
}

fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = half(b, 0);
    let (lo, hi) = o.split_at_mut(16);
    for ((q, a), c) in b[2..18].iter().zip(lo).zip(hi) {
        *a = ((q & 0x0F) as i32 - 8) as f32 * d;
        *c = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let (lo, hi) = o.split_at_mut(16);
    for ((q, a), c) in b[4..20].iter().zip(lo).zip(hi) {
        *a = (q & 0x0F) as f32 * d + m;
        *c = (q >> 4) as f32 * d + m;
    }
}

/// 5-bit codes: 4 low bits as in Q4, bit 4 of element `i` is bit `i` of the u32 `qh`.
#[inline]
fn five_bit<'a>(qh: &[u8], qs: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibbles(qs).enumerate().map(move |(i, lo)| lo | ((((qh >> i) & 1) as u8) << 4))
}

fn q5_0(b: &[u8], o: &mut [f32]) {
    let d = half(b, 0);
    for (y, q) in o.iter_mut().zip(five_bit(&b[2..6], &b[6..])) {
        *y = (q as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for (y, q) in o.iter_mut().zip(five_bit(&b[4..8], &b[8..])) {
        *y = q as f32 * d + m;
    }
}

fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = half(b, 0);
    for (y, &q) in o.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Q2_K: `scales[16], qs[64], d:f16, dmin:f16`. Sixteen 16-element sub-blocks; sub-block `s` has
/// scale `d * (scales[s] & 15)` and min `dmin * (scales[s] >> 4)`. The 2-bit codes: the 256 elements
/// are two halves of 128; in half `h`, element `k*32 + l` (k = 0..4, l = 0..32) is bits `2k..2k+2` of
/// `qs[h*32 + l]`. Value = scale * code - min.
fn q2_k(b: &[u8], o: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half(b, 80), half(b, 82));
    for (i, y) in o.iter_mut().enumerate() {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let code = (qs[h * 32 + l] >> (2 * k)) & 3;
        let sc = scales[i / 16];
        *y = d * (sc & 15) as f32 * code as f32 - dmin * (sc >> 4) as f32;
    }
}

/// Q3_K: `hmask[32], qs[64], scales[12], d:f16`. Sixteen 16-element sub-blocks with signed 6-bit
/// scales (`(low4 | high2 << 4) - 32`; low nibbles: byte `s % 8` of scales, high nibble for `s >= 8`;
/// high 2 bits: bits `2*(s/4)..` of byte `8 + s % 4`). Low 2 bits of the code as in Q2_K; the high
/// bit of element `i` is bit `i / 32` of `hmask[i % 32]`, and a *clear* bit subtracts 4.
fn q3_k(b: &[u8], o: &mut [f32]) {
    let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half(b, 108);
    let scale = |s: usize| -> f32 {
        let lo = if s < 8 { sc[s] & 15 } else { sc[s - 8] >> 4 };
        let hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        ((lo | (hi << 4)) as i32 - 32) as f32
    };
    for (i, y) in o.iter_mut().enumerate() {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = ((qs[h * 32 + l] >> (2 * k)) & 3) as i32;
        let high_set = (hmask[l] >> (i / 32)) & 1 == 1;
        let code = low - if high_set { 0 } else { 4 };
        *y = d * scale(i / 16) * code as f32;
    }
}

/// The 6-bit (scale, min) pair of 32-element sub-block `j` (0..8) of a Q4_K/Q5_K super-block:
/// bytes 0..4 hold scales 0..4 in their low 6 bits, bytes 4..8 mins 0..4; sub-blocks 4..8 take their
/// low 4 bits from byte `8 + j - 4` (scale: low nibble, min: high nibble) and their top 2 bits from
/// the spare top bits of bytes `j - 4` (scale) and `j` (min).
#[inline]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K: `d:f16, dmin:f16, scales[12], qs[128]`. Eight 32-element sub-blocks; pairs of sub-blocks
/// (2p, 2p+1) share 32 bytes `qs[32p..32p+32]`: low nibbles for 2p, high nibbles for 2p+1.
/// Value = d * scale_j * code - dmin * min_j.
fn q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (sc, qs) = (&b[4..16], &b[16..144]);
    for (j, out) in o.chunks_exact_mut(32).enumerate() {
        let (s, m) = scale_min_k4(j, sc);
        let (dl, ml) = (d * s as f32, dmin * m as f32);
        let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (y, q) in out.iter_mut().zip(bytes) {
            let code = if j % 2 == 0 { q & 15 } else { q >> 4 };
            *y = dl * code as f32 - ml;
        }
    }
}

/// Q5_K: `d:f16, dmin:f16, scales[12], qh[32], qs[128]`. As Q4_K, plus a fifth bit: element `l` of
/// sub-block `j` takes bit `j` of `qh[l]` as bit 4 of its code.
fn q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (sc, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (j, out) in o.chunks_exact_mut(32).enumerate() {
        let (s, m) = scale_min_k4(j, sc);
        let (dl, ml) = (d * s as f32, dmin * m as f32);
        let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (l, (y, q)) in out.iter_mut().zip(bytes).enumerate() {
            let lo = if j % 2 == 0 { q & 15 } else { q >> 4 };
            let code = lo | (((qh[l] >> j) & 1) << 4);
            *y = dl * code as f32 - ml;
        }
    }
}

/// Q6_K: `ql[128], qh[64], scales:i8[16], d:f16`. Two halves of 128 elements; in half `h`, element
/// `k*32 + l` (k = 0..4) has low 4 bits from `ql[h*64 + (k%2)*32 + l]` (low nibble for k < 2, high
/// for k >= 2) and high 2 bits from bits `2k..2k+2` of `qh[h*32 + l]`; code - 32 is scaled by
/// `d * scales[i / 16]`.
fn q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    for (i, y) in o.iter_mut().enumerate() {
        let (h, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let lbyte = ql[h * 64 + (k % 2) * 32 + l];
        let lo = if k < 2 { lbyte & 15 } else { lbyte >> 4 };
        let hi = (qh[h * 32 + l] >> (2 * k)) & 3;
        let code = (lo | (hi << 4)) as i32 - 32;
        *y = d * (sc[i / 16] as i8) as f32 * code as f32;
    }
}
