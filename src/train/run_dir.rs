//! The output folder of a run: one writer at a time (a lock), no silent mixing with an earlier run
//! (refuse, replace with `output.overwrite`, or continue with `--resume`), the leftovers of a killed
//! run cleaned, and the metrics log kept without losing history.
//!
//! The lock is an advisory `flock` on `<dir>/.epa.lock`, which holds the owner's pid for the error
//! message. The kernel drops it when the process dies, however it dies, so a stale lock cannot
//! block a later run.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::faults;

/// How a run treats what an earlier run left in its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The folder must not hold an earlier run.
    Fresh,
    /// Delete an earlier run's metrics, checkpoints and exports first.
    Overwrite,
    /// Continue: the metrics log is kept up to the resumed step.
    Resume,
}

/// A locked output folder.
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    _lock: File,
}

/// What an earlier run leaves: the names [`RunDir::open`] looks for and `Overwrite` deletes.
const RUN_FILES: [&str; 3] = ["metrics.jsonl", "final", "adapter"];

impl RunDir {
    /// Creates and locks `dir`, cleans a killed run's leftovers and applies `start`.
    pub fn open(dir: &Path, start: Start) -> Result<RunDir> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the output folder {}", dir.display()))?;
        let lock = lock(dir)?;
        let rd = RunDir { dir: dir.to_path_buf(), _lock: lock };
        rd.clean_leftovers()?;
        let earlier = rd.earlier_run();
        match start {
            Start::Resume => {}
            Start::Fresh if earlier.is_empty() => {}
            Start::Fresh => bail!(
                "{} holds an earlier run ({}): continue it with `--resume {}`, replace it with `--overwrite` \
                 (output.overwrite = true), or choose another output.dir",
                dir.display(),
                earlier.join(", "),
                dir.display()
            ),
            Start::Overwrite => {
                for (_, p) in checkpoint::list(dir) {
                    remove(&p)?;
                }
                for name in RUN_FILES {
                    remove(&dir.join(name))?;
                }
                if !earlier.is_empty() {
                    eprintln!(
                        "output.overwrite: deleted the earlier run in {} ({})",
                        dir.display(),
                        earlier.join(", ")
                    );
                }
            }
        }
        Ok(rd)
    }

    /// What an earlier run left here, in words (empty: nothing).
    fn earlier_run(&self) -> Vec<String> {
        let mut v = Vec::new();
        let ckpts = checkpoint::list(&self.dir);
        if !ckpts.is_empty() {
            let last = ckpts.last().map(|c| c.0).unwrap_or(0);
            v.push(format!("{} checkpoint(s), the newest at step {last}", ckpts.len()));
        }
        for name in RUN_FILES {
            let p = self.dir.join(name);
            let nonempty = std::fs::metadata(&p).map(|m| m.is_dir() || m.len() > 0).unwrap_or(false);
            if nonempty {
                v.push(if p.is_dir() { format!("{name}/") } else { name.to_string() });
            }
        }
        v
    }

    /// Deletes what a killed run leaves: half-written checkpoint folders, checkpoint folders without
    /// `state.json`, temporary files of atomic writes; puts back a checkpoint that was moved aside to
    /// be replaced when its replacement never arrived.
    fn clean_leftovers(&self) -> Result<()> {
        let mut cleaned = Vec::new();
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))?;
        for e in entries.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().to_str().map(String::from) else { continue };
            let path = e.path();
            if let Some(rest) = name.strip_prefix(".checkpoint-") {
                if let Some((step, _)) = rest.split_once(".old-") {
                    let home = self.dir.join(format!("checkpoint-{step}"));
                    if !home.join("state.json").exists() {
                        if home.exists() {
                            std::fs::remove_dir_all(&home)
                                .with_context(|| format!("cannot delete {}", home.display()))?;
                        }
                        std::fs::rename(&path, &home).with_context(|| format!("cannot restore {}", home.display()))?;
                        cleaned.push(format!("restored {}", home.display()));
                        continue;
                    }
                }
                remove(&path)?;
                cleaned.push(path.display().to_string());
            } else if (name.starts_with("checkpoint-") && path.is_dir() && !path.join("state.json").exists())
                || (name.starts_with('.') && name.ends_with(".tmp"))
            {
                remove(&path)?;
                cleaned.push(path.display().to_string());
            }
        }
        if !cleaned.is_empty() {
            eprintln!("cleaned what an interrupted run left: {}", cleaned.join(", "));
        }
        Ok(())
    }
}

/// Deletes a file or a folder; one that is not there is fine.
fn remove(p: &Path) -> Result<()> {
    match if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) } {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", p.display()))
        }
        _ => Ok(()),
    }
}

fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(".epa.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // A lock held a moment longer than its run (a process forked by the holder keeps the lock's file
    // description until it execs) is waited for, up to two seconds.
    let mut r = f.try_lock();
    for _ in 0..20 {
        if !matches!(r, Err(std::fs::TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = f.try_lock();
    }
    match r {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.trim();
            let who = if owner.is_empty() { String::new() } else { format!(" (pid {owner})") };
            bail!(
                "{} is in use by another epa run{who}: wait for it to finish, or choose another output.dir",
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    f.set_len(0).and_then(|_| write!(f, "{}", std::process::id())).and_then(|_| f.flush()).ok();
    Ok(f)
}

/// `metrics.jsonl`: one JSON object per row, appended and flushed row by row; on resume the rows past
/// the resumed step are dropped by an atomic replace (written aside, synced, renamed), so a kill at
/// any moment leaves either the old log or the new one.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    /// The rows kept from an earlier run.
    pub kept: Vec<serde_json::Value>,
}

impl MetricsLog {
    /// Opens the log of `dir`: a new one, or (`keep_through = Some(step)`) the earlier run's rows up
    /// to and including `step`.
    pub fn open(dir: &Path, keep_through: Option<usize>) -> Result<MetricsLog> {
        let path = dir.join("metrics.jsonl");
        let mut kept = Vec::new();
        if let Some(step) = keep_through {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            // Rows are kept as written (a re-serialised float could differ in its last digit).
            let mut body = String::new();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                if v["step"].as_u64().is_some_and(|s| s as usize <= step) {
                    body.push_str(line);
                    body.push('\n');
                    kept.push(v);
                }
            }
            if body != text {
                crate::model::save::write_atomic(&path, body.as_bytes())?;
                faults::point("metrics.jsonl replaced");
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if keep_through.is_none() {
            file.set_len(0).with_context(|| format!("cannot truncate {}", path.display()))?;
        }
        Ok(MetricsLog { path, file, kept })
    }

    /// Appends one row (with its `step`) and flushes it to the kernel.
    pub fn write(&mut self, step: usize, row: &std::collections::BTreeMap<String, f64>) -> Result<()> {
        let mut v = serde_json::to_value(row)?;
        v["step"] = step.into();
        writeln!(self.file, "{v}")
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        faults::point("metrics row appended");
        Ok(())
    }

    /// Forces the rows written so far to disk (before a checkpoint that covers them).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("cannot write {}", self.path.display()))
    }
}
