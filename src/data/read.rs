//! Readers: JSON lines, JSON arrays and Parquet, all yielding [`Row`]s (JSON objects with a location).
//!
//! Row-level problems (a bad line, a non-UTF-8 line, a line over `max_line_bytes`, an element that is
//! not an object) are [`ReadError::Row`] and reading continues; problems that make the rest of the file
//! unreadable (I/O, a JSON array with a syntax error, a corrupt Parquet file) are [`ReadError::Fatal`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

use super::arrow_json::batch_rows;
use super::config::Format;
use super::error::{Problem, RowError, RowLoc, RowPos, json_type};

/// One input row: a JSON object and where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    /// Where the row is.
    pub loc: RowLoc,
    /// The row's fields (a Parquet row is converted to the same JSON form).
    pub value: Map<String, Value>,
}

/// Why a reader yielded no row.
#[derive(Debug)]
pub enum ReadError {
    /// This row is bad; reading goes on with the next one.
    Row(RowError),
    /// The rest of the file cannot be read (I/O error, corrupt Parquet); reading stops.
    Fatal(anyhow::Error),
}

/// Reads rows from one file.
pub struct RowReader {
    file: Arc<str>,
    format: Format,
    inner: Inner,
}

enum Inner {
    Jsonl(JsonlRows),
    Json(std::iter::Enumerate<std::vec::IntoIter<Value>>),
    Parquet(Box<ParquetRows>),
}

/// Resolves `Format::Auto` from the extension and, for `.json`, the first non-blank byte.
pub fn resolve_format(path: &Path, format: Format) -> Result<Format> {
    if format != Format::Auto {
        return Ok(format);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "parquet" | "pq" => Ok(Format::Parquet),
        "jsonl" | "ndjson" => Ok(Format::Jsonl),
        "json" => {
            let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut buf = [0u8; 4096];
            let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
            let first = strip_bom(&buf[..n]).iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                return Ok(Format::Json);
            }
            if first == Some(&b'{') && !first_line_is_json(path)? {
                bail!(
                    "{}: expected an array of rows ([{{…}}, …]) or JSON Lines (one object per line); this file starts \
                     with a JSON object that spans several lines",
                    path.display()
                );
            }
            Ok(Format::Jsonl)
        }
        _ => bail!(
            "{}: cannot tell the format from the extension; use .jsonl, .json or .parquet, or set `format`",
            path.display()
        ),
    }
}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// Whether the first line of `path` parses as JSON on its own (JSON Lines) — a pretty-printed
/// object does not.
fn first_line_is_json(path: &Path) -> Result<bool> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut line = Vec::new();
    BufReader::new(f)
        .take(64 << 20)
        .read_until(b'\n', &mut line)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice::<serde::de::IgnoredAny>(strip_bom(&line)).is_ok())
}

impl RowReader {
    /// Opens `path` in `format` (`Auto` resolved as [`resolve_format`] does); a JSON array file is
    /// parsed whole here. JSON lines longer than `max_line_bytes` become row errors.
    pub fn open(path: &Path, format: Format, max_line_bytes: usize) -> Result<Self> {
        let format = resolve_format(path, format)?;
        let file: Arc<str> = path.display().to_string().into();
        let inner = match format {
            Format::Jsonl => {
                let f = File::open(path).with_context(|| format!("opening {file}"))?;
                Inner::Jsonl(JsonlRows {
                    reader: BufReader::new(f),
                    line: 0,
                    limit: max_line_bytes,
                    buf: Vec::new(),
                    done: false,
                })
            }
            Format::Json => Inner::Json(read_json_array(path, &file)?.into_iter().enumerate()),
            Format::Parquet => Inner::Parquet(Box::new(ParquetRows::open(path, &file)?)),
            Format::Auto => unreachable!("resolved above"),
        };
        Ok(Self { file, format, inner })
    }

    /// The file's path, as row locations name it.
    pub fn file(&self) -> &str {
        &self.file
    }
    /// The resolved format (never `Auto`).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Top-level column names, known up front for Parquet only.
    pub fn columns(&self) -> Option<Vec<String>> {
        match &self.inner {
            Inner::Parquet(p) => Some(p.columns.clone()),
            _ => None,
        }
    }

    /// Parquet: read only these columns. A missing column is an error naming the file, the column and
    /// the columns it has (a file with a different schema).
    pub fn project(&mut self, columns: &[String]) -> Result<()> {
        if let Inner::Parquet(p) = &mut self.inner {
            p.project(columns, &self.file)?;
        }
        Ok(())
    }
}

impl Iterator for RowReader {
    type Item = Result<Row, ReadError>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Jsonl(j) => j.next_row(&self.file),
            Inner::Json(it) => {
                let (i, v) = it.next()?;
                let loc = RowLoc { file: self.file.clone(), pos: RowPos::Element(i) };
                Some(object(v, loc))
            }
            Inner::Parquet(p) => p.next_row(&self.file),
        }
    }
}

fn object(v: Value, loc: RowLoc) -> Result<Row, ReadError> {
    match v {
        Value::Object(value) => Ok(Row { loc, value }),
        other => Err(ReadError::Row(RowError { loc, field: None, problem: Problem::NotAnObject(json_type(&other)) })),
    }
}

fn read_json_array(path: &Path, file: &str) -> Result<Vec<Value>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {file}"))?;
    let bytes = strip_bom(&bytes);
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|b| **b == b'\n').count();
        bail!("{file}: line {line}: not valid UTF-8 (byte {at} of the file)");
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => bail!("{file}: expected a JSON array of rows, found {}", json_type(&other)),
        Err(e) => Err(anyhow!("{file}: line {}: bad JSON: {e}", e.line())),
    }
}

/// JSON lines with a per-line byte limit (an over-long line is skipped without being held in memory).
struct JsonlRows {
    reader: BufReader<File>,
    line: usize,
    limit: usize,
    buf: Vec<u8>,
    done: bool,
}

enum LineRead {
    Eof,
    Line,
    TooLong(usize),
}

impl JsonlRows {
    fn read_line(&mut self) -> std::io::Result<LineRead> {
        self.buf.clear();
        let mut total = 0usize;
        let mut any = false;
        loop {
            let avail = self.reader.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            any = true;
            let (chunk, found) = match avail.iter().position(|b| *b == b'\n') {
                Some(p) => (&avail[..p], true),
                None => (avail, false),
            };
            if total + chunk.len() <= self.limit {
                self.buf.extend_from_slice(chunk);
            }
            total += chunk.len();
            let used = chunk.len() + usize::from(found);
            self.reader.consume(used);
            if found {
                break;
            }
        }
        if !any {
            return Ok(LineRead::Eof);
        }
        Ok(if total > self.limit { LineRead::TooLong(total) } else { LineRead::Line })
    }

    fn next_row(&mut self, file: &Arc<str>) -> Option<Result<Row, ReadError>> {
        loop {
            if self.done {
                return None;
            }
            let read = match self.read_line() {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Fatal(anyhow!("{file}: line {}: read error: {e}", self.line + 1))));
                }
            };
            self.line += 1;
            let loc = RowLoc { file: file.clone(), pos: RowPos::Line(self.line) };
            let err = |problem| Some(Err(ReadError::Row(RowError { loc: loc.clone(), field: None, problem })));
            match read {
                LineRead::Eof => {
                    self.done = true;
                    return None;
                }
                LineRead::TooLong(bytes) => {
                    return err(Problem::LineTooLong { bytes, limit: self.limit });
                }
                LineRead::Line => {}
            }
            let line = if self.line == 1 { strip_bom(&self.buf) } else { &self.buf[..] };
            let text = match std::str::from_utf8(line) {
                Ok(t) => t.trim_end_matches('\r'),
                Err(e) => {
                    return err(Problem::NotUtf8 { byte: e.valid_up_to() });
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return match serde_json::from_str::<Value>(text) {
                Ok(v) => Some(object(v, loc)),
                Err(e) => err(Problem::BadJson(format!("{e}"))),
            };
        }
    }
}

/// Parquet rows, decoded batch by batch. The parquet crate is guarded with `catch_unwind` so a corrupt
/// file is an error, never a crash.
struct ParquetRows {
    builder: Option<ParquetRecordBatchReaderBuilder<File>>,
    reader: Option<ParquetRecordBatchReader>,
    columns: Vec<String>,
    /// The columns being read (all of them unless projected), for error messages.
    reading: Vec<String>,
    pending: std::vec::IntoIter<Map<String, Value>>,
    next_row: usize,
    done: bool,
}

fn guarded<T>(what: &str, file: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(anyhow!("{file}: corrupt Parquet file (the decoder failed while {what})")),
    }
}

impl ParquetRows {
    fn open(path: &Path, file: &str) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("opening {file}"))?;
        let builder = guarded("reading the footer", file, || {
            ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| anyhow!("{file}: not a readable Parquet file: {e}"))
        })?;
        let columns: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        Ok(Self {
            builder: Some(builder.with_batch_size(1024)),
            reader: None,
            reading: columns.clone(),
            columns,
            pending: Vec::new().into_iter(),
            next_row: 0,
            done: false,
        })
    }

    fn project(&mut self, wanted: &[String], file: &str) -> Result<()> {
        let Some(builder) = self.builder.take() else { bail!("{file}: projection set after reading started") };
        let mut idx = Vec::new();
        for w in wanted {
            match self.columns.iter().position(|c| c == w) {
                Some(i) => idx.push(i),
                None => {
                    bail!("{file}: field `{w}`: no such column (the file's columns are: {})", self.columns.join(", "))
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        self.reading = idx.iter().map(|&i| self.columns[i].clone()).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        self.builder = Some(builder.with_projection(mask));
        Ok(())
    }

    fn next_row(&mut self, file: &Arc<str>) -> Option<Result<Row, ReadError>> {
        loop {
            if let Some(value) = self.pending.next() {
                let loc = RowLoc { file: file.clone(), pos: RowPos::Row(self.next_row) };
                self.next_row += 1;
                return Some(Ok(Row { loc, value }));
            }
            if self.done {
                return None;
            }
            match self.next_batch(file) {
                Ok(Some(rows)) => self.pending = rows.into_iter(),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Fatal(e)));
                }
            }
        }
    }

    fn next_batch(&mut self, file: &str) -> Result<Option<Vec<Map<String, Value>>>> {
        if self.reader.is_none() {
            let builder = self.builder.take().ok_or_else(|| anyhow!("{file}: reader already consumed"))?;
            let reader = guarded("opening the row groups", file, || Ok(builder.build()?))
                .with_context(|| format!("{file}: opening the Parquet reader"))?;
            self.reader = Some(reader);
        }
        let reader = self.reader.as_mut().expect("set above");
        let row = self.next_row;
        let batch = guarded("decoding rows", file, || reader.next().transpose().map_err(anyhow::Error::from))
            .with_context(|| format!("{file}: decoding rows from row {row} (columns {})", self.reading.join(", ")))?;
        match batch {
            None => Ok(None),
            Some(b) => batch_rows(&b).map(Some).map_err(|e| anyhow!("{file}: row {row}: {e}")),
        }
    }
}
