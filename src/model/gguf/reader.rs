//! The GGUF container (versions 2 and 3, little-endian): header, metadata key/values, tensor
//! infos, then the aligned tensor data section.
//!
//! ```text
//! "GGUF" u32:version u64:n_tensors u64:n_kv
//! n_kv × (string:key, u32:value_type, value)
//! n_tensors × (string:name, u32:n_dims, u64[n_dims]:ne, u32:ggml_type, u64:offset)
//! padding to `general.alignment` (default 32), then the data; tensor offsets are relative to it.
//! ```
//! Strings are `u64 length + UTF-8 bytes`; arrays are `u32 element type, u64 count, elements`.
//! `ne[0]` is the fastest-varying dimension (the number of columns of a row-major matrix).
//!
//! Every read is bounds-checked: a truncated or corrupted file gives an error naming the file and
//! what was being read, never a panic or a huge allocation.

use super::quant::GgmlType;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Value type 0: unsigned 8-bit integer.
    U8(u8),
    /// Value type 1: signed 8-bit integer.
    I8(i8),
    /// Value type 2: unsigned 16-bit integer.
    U16(u16),
    /// Value type 3: signed 16-bit integer.
    I16(i16),
    /// Value type 4: unsigned 32-bit integer.
    U32(u32),
    /// Value type 5: signed 32-bit integer.
    I32(i32),
    /// Value type 6: 32-bit float.
    F32(f32),
    /// Value type 7: boolean (one byte, 0 or 1).
    Bool(bool),
    /// Value type 8: UTF-8 string.
    String(String),
    /// Value type 9: array of values of one element type.
    Array(Vec<GgufValue>),
    /// Value type 10: unsigned 64-bit integer.
    U64(u64),
    /// Value type 11: signed 64-bit integer.
    I64(i64),
    /// Value type 12: 64-bit float.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        use GgufValue::*;
        match *self {
            U8(x) => Some(x as u64),
            U16(x) => Some(x as u64),
            U32(x) => Some(x as u64),
            U64(x) => Some(x),
            I8(x) => u64::try_from(x).ok(),
            I16(x) => u64::try_from(x).ok(),
            I32(x) => u64::try_from(x).ok(),
            I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }
    /// The value as a signed integer, if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        use GgufValue::*;
        match *self {
            I8(x) => Some(x as i64),
            I16(x) => Some(x as i64),
            I32(x) => Some(x as i64),
            I64(x) => Some(x),
            _ => self.as_u64().and_then(|x| i64::try_from(x).ok()),
        }
    }
    /// The value as f64. An f32 is widened through its shortest decimal form, so that
    /// `1e-5f32` becomes `1e-5`, not `9.999999747378752e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(x) => format!("{x}").parse().ok(),
            GgufValue::F64(x) => Some(x),
            _ => self.as_i64().map(|x| x as f64),
        }
    }
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool, if it is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
    /// A short description of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        use GgufValue::*;
        match self {
            U8(_) => "u8",
            I8(_) => "i8",
            U16(_) => "u16",
            I16(_) => "i16",
            U32(_) => "u32",
            I32(_) => "i32",
            F32(_) => "f32",
            Bool(_) => "bool",
            String(_) => "string",
            Array(_) => "array",
            U64(_) => "u64",
            I64(_) => "i64",
            F64(_) => "f64",
        }
    }
}

/// One tensor's description (no data).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The GGUF (llama.cpp) tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying dimension (columns).
    pub dims: Vec<u64>,
    /// How the data is stored (f32, f16, a quantisation, …).
    pub ty: GgmlType,
    /// Byte offset of the data, relative to [`GgufFile::data_offset`].
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements: the product of `dims`.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// The shape in row-major (PyTorch / Hugging Face) order: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: metadata and tensor infos, no tensor data.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// The file this was parsed from (named in error messages).
    pub path: PathBuf,
    /// Format version from the header (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Alignment of the data section and of every tensor offset, in bytes (`general.alignment`, a power
    /// of two; 32 when absent).
    pub alignment: u64,
    /// Absolute file offset where the tensor data section starts.
    pub data_offset: u64,
    /// Total file size in bytes.
    pub file_size: u64,
}

impl GgufFile {
    /// The metadata value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The tensor info named `name` (GGUF name), if present.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// Required string metadata.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            None => bail!("{}: metadata key `{key}` is missing", self.path.display()),
            Some(v) => v.as_str().with_context(|| {
                format!("{}: metadata key `{key}` is a {}, expected a string", self.path.display(), v.type_name())
            }),
        }
    }
    /// Required unsigned integer metadata.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => bail!("{}: metadata key `{key}` is missing", self.path.display()),
            Some(v) => v.as_u64().with_context(|| {
                format!(
                    "{}: metadata key `{key}` is a {}, expected a non-negative integer",
                    self.path.display(),
                    v.type_name()
                )
            }),
        }
    }
    /// Optional float metadata (an integer is accepted too).
    pub fn get_f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).with_context(|| {
                format!("{}: metadata key `{key}` is a {}, expected a number", self.path.display(), v.type_name())
            }),
        }
    }
    /// Parses the header, metadata and tensor infos of `bytes` (the whole file).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<GgufFile> {
        parse(path, bytes).with_context(|| format!("{}: not a readable GGUF file", path.display()))
    }
    /// The bytes of tensor `t` inside `bytes` (the whole file), bounds-checked.
    pub fn tensor_bytes<'a>(&self, t: &GgufTensorInfo, bytes: &'a [u8]) -> Result<&'a [u8]> {
        let size = t.ty.byte_size(t.n_elements()).with_context(|| {
            format!(
                "{}: tensor `{}` has type {} whose size cannot be computed for dims {:?}",
                self.path.display(),
                t.name,
                t.ty.name(),
                t.dims
            )
        })?;
        let start = self.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => Ok(&bytes[s as usize..e as usize]),
            _ => bail!(
                "{}: tensor `{}` ({} bytes at data offset {}) runs past the end of the file ({} bytes): truncated file?",
                self.path.display(),
                t.name,
                size,
                t.offset,
                bytes.len()
            ),
        }
    }
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => bail!(
                "unexpected end of file at byte {} reading {} ({n} bytes needed, {} left): truncated file?",
                self.pos,
                what(),
                self.bytes.len() - self.pos
            ),
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn arr<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returns N bytes"))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            bail!("{}: string length {len} exceeds the {} bytes left in the file", what(), self.remaining());
        }
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| anyhow::anyhow!("{}: string is not valid UTF-8", what()))
    }
}

/// Minimum encoded size of a value of each metadata type (for sanity-checking array counts).
fn min_value_size(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10 | 11 | 12 => 8,
        9 => 12,
        _ => 1,
    }
}

fn read_value(c: &mut Cursor, ty: u32, depth: usize, what: &dyn Fn() -> String) -> Result<GgufValue> {
    use GgufValue::*;
    Ok(match ty {
        0 => U8(c.arr::<1>(what)?[0]),
        1 => I8(c.arr::<1>(what)?[0] as i8),
        2 => U16(u16::from_le_bytes(c.arr(what)?)),
        3 => I16(i16::from_le_bytes(c.arr(what)?)),
        4 => U32(c.u32(what)?),
        5 => I32(i32::from_le_bytes(c.arr(what)?)),
        6 => F32(f32::from_le_bytes(c.arr(what)?)),
        7 => match c.arr::<1>(what)?[0] {
            0 => Bool(false),
            1 => Bool(true),
            b => bail!("{}: invalid bool byte {b}", what()),
        },
        8 => String(c.string(what)?),
        9 => {
            if depth > 4 {
                bail!("{}: arrays nested too deeply", what());
            }
            let elem_ty = c.u32(what)?;
            let n = c.u64(what)?;
            let min = min_value_size(elem_ty) as u64;
            if n.saturating_mul(min) > c.remaining() as u64 {
                bail!(
                    "{}: array of {n} elements cannot fit in the {} bytes left: corrupted file?",
                    what(),
                    c.remaining()
                );
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(c, elem_ty, depth + 1, what)?);
            }
            Array(items)
        }
        10 => U64(c.u64(what)?),
        11 => I64(i64::from_le_bytes(c.arr(what)?)),
        12 => F64(f64::from_le_bytes(c.arr(what)?)),
        other => bail!("{}: unknown metadata value type {other}", what()),
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<GgufFile> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.arr::<4>(&|| "the magic bytes".into())?;
    if &magic != GGUF_MAGIC {
        bail!("bad magic {:?} (expected \"GGUF\"): not a GGUF file", String::from_utf8_lossy(&magic));
    }
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => bail!("GGUF version 1 is not supported (only 2 and 3); re-convert the model with a recent llama.cpp"),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            bail!("big-endian GGUF files are not supported (version field reads {v:#x})")
        }
        v => bail!("unknown GGUF version {v} (supported: 2, 3)"),
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;
    // Each kv takes at least 8 (key len) + 4 (type) + 1 bytes; each tensor info at least 8+4+4+8.
    if n_kv.saturating_mul(13) > c.remaining() as u64 || n_tensors.saturating_mul(24) > c.remaining() as u64 {
        bail!("header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file can hold: corrupted?");
    }

    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let what = || format!("metadata value `{key}`");
        let ty = c.u32(&what)?;
        let value = read_value(&mut c, ty, 0, &what)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => bail!("metadata `general.alignment` = {v:?} must be a power of two"),
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"))?;
        let what = || format!("the info of tensor `{name}`");
        let n_dims = c.u32(&what)?;
        if n_dims > 8 {
            bail!("tensor `{name}` claims {n_dims} dimensions (at most 8 allowed): corrupted file?");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what)?);
        }
        if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
            bail!("tensor `{name}` has dims {dims:?} whose product overflows: corrupted file?");
        }
        let ty = GgmlType::from_id(c.u32(&what)?);
        let offset = c.u64(&what)?;
        if offset % alignment != 0 {
            bail!("tensor `{name}` data offset {offset} is not a multiple of the alignment {alignment}");
        }
        tensors.push(GgufTensorInfo { name, dims, ty, offset });
    }

    let pos = c.pos as u64;
    let data_offset = pos.div_ceil(alignment) * alignment;
    if data_offset > bytes.len() as u64 && !tensors.is_empty() {
        bail!("the tensor data section (at byte {data_offset}) is missing: truncated file?");
    }
    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size: bytes.len() as u64,
    })
}
