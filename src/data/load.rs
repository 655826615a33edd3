//! Files → rows → shapes → [`PreferenceGroup`]s, streaming, with bad rows failed or counted.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

use super::config::{DataConfig, OnBadRow, ShapeKind};
use super::error::{Problem, RowError, RowLoc};
use super::group::{PreferenceGroup, group};
use super::read::{ReadError, RowReader};
use super::report::{DataReport, FileSummary};
use super::shape::{columns, detect, parse_row};

fn bad_row(cfg: &DataConfig, report: &mut DataReport, e: RowError) -> Result<()> {
    if cfg.on_bad_row == OnBadRow::Fail && e.problem.is_malformed() {
        return Err(anyhow!("{e}").context("bad row (set on_bad_row = \"skip\" to drop such rows and go on)"));
    }
    report.drop_row(&e);
    Ok(())
}

/// A directory stands for its data files (`.parquet`, `.jsonl`, `.ndjson`, `.json`), in name order — as
/// a Hugging Face dataset folder of shards.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let entries = std::fs::read_dir(p).with_context(|| format!("listing {}", p.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
                f.is_file() && ["parquet", "jsonl", "ndjson", "json"].contains(&ext)
            })
            .collect();
        if files.is_empty() {
            return Err(anyhow!("{}: no .parquet, .jsonl or .json files in this folder", p.display()));
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

/// Reads every file of `cfg.paths` and hands each kept group to `sink`, recording everything in `report`.
pub fn read_groups(
    cfg: &DataConfig,
    report: &mut DataReport,
    mut sink: impl FnMut(RowLoc, PreferenceGroup, &mut DataReport) -> Result<()>,
) -> Result<()> {
    if cfg.paths.is_empty() {
        return Err(anyhow!("no data files given (`paths` is empty)"));
    }
    for path in &expand_paths(&cfg.paths)? {
        if cfg.max_rows.is_some_and(|m| report.rows_read >= m) {
            break;
        }
        let mut reader = RowReader::open(path, cfg.format, cfg.max_line_bytes)?;
        let mut shape = cfg.shape;
        let schema_known = reader.columns().is_some();
        if let Some(cols) = reader.columns() {
            if shape == ShapeKind::Auto {
                let keys: Vec<&str> = cols.iter().map(String::as_str).collect();
                shape = detect(&keys, &cfg.fields).map_err(|m| anyhow!("{}: {m}", reader.file()))?;
            }
            reader.project(&columns(shape, &cfg.fields, &cols))?;
        }
        let mut rows = 0usize;
        let mut first_shape: Option<(ShapeKind, super::error::RowPos)> = None;
        for item in &mut reader {
            if cfg.max_rows.is_some_and(|m| report.rows_read >= m) {
                break;
            }
            report.rows_read += 1;
            rows += 1;
            let row = match item {
                Ok(r) => r,
                Err(ReadError::Fatal(e)) => return Err(e),
                Err(ReadError::Row(e)) => {
                    bad_row(cfg, report, e)?;
                    continue;
                }
            };
            // Auto shape, JSON rows: every row's fields must give the shape the file's first row
            // gave; a row that fits none or another one is a bad row (failed or skipped as configured).
            if cfg.shape == ShapeKind::Auto && !schema_known {
                let keys: Vec<&str> = row.value.keys().map(String::as_str).collect();
                let problem = match (detect(&keys, &cfg.fields), &first_shape) {
                    // Fits no shape: before the shape is known, say so; after, parsing it as the
                    // file's shape names the missing field.
                    (Err(m), None) => Some(m),
                    (Err(_), Some(_)) => None,
                    (Ok(k), None) => {
                        shape = k;
                        first_shape = Some((k, row.loc.pos));
                        None
                    }
                    (Ok(k), Some((s, at))) if k != *s => Some(format!(
                        "the fields [{}] make a {} row, but this file's rows are {} (decided by {at}): \
                         one file holds one shape (or set `shape` in the data config)",
                        keys.join(", "),
                        k.name(),
                        s.name()
                    )),
                    _ => None,
                };
                if let Some(m) = problem {
                    bad_row(cfg, report, RowError { loc: row.loc, field: None, problem: Problem::Shape(m) })?;
                    continue;
                }
            }
            let raw = match parse_row(&row.value, shape, &cfg.fields) {
                Ok(raw) => raw,
                Err(fe) => {
                    bad_row(cfg, report, fe.at(&row.loc))?;
                    continue;
                }
            };
            if raw.conversational {
                report.conversational_rows += 1;
            }
            for s in &raw.skipped {
                report.drop_candidate(&s.clone().at(&row.loc));
            }
            let grouped = group(raw, &cfg.grouping, cfg.seed);
            for d in grouped.dropped {
                report.drop_candidate(&d.at(&row.loc));
            }
            match (grouped.group, grouped.reason) {
                (Some(g), _) => sink(row.loc, g, report)?,
                (None, Some(reason)) => report.drop_row(&RowError { loc: row.loc, field: None, problem: reason }),
                (None, None) => {}
            }
        }
        report.files.push(FileSummary { path: reader.file().to_owned(), format: reader.format(), shape, rows });
    }
    Ok(())
}

/// All groups of `cfg.paths` in memory, with their locations.
pub fn load_groups(cfg: &DataConfig) -> Result<(Vec<(RowLoc, PreferenceGroup)>, DataReport)> {
    let mut report = DataReport::default();
    let mut out = Vec::new();
    read_groups(cfg, &mut report, |loc, g, _| {
        out.push((loc, g));
        Ok(())
    })?;
    Ok((out, report))
}
