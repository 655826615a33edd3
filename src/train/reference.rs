//! Reference log-probs, two ways: a frozen copy of the initial model in memory, or sums computed
//! once and cached on disk, keyed by a hash of the reference weights and of every token of the
//! data (so any change of data, template or truncation settings gives a new key), reused across
//! runs and loss types.

use anyhow::{Context, Result};
use burn::tensor::Device;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::GroupStore;
use crate::model::load::LoadedModel;
use crate::model::save::write_atomic;

use super::step::reference_sums;

/// Hash of the files a model spec points at (weights, config), without loading it.
pub fn model_fingerprint(spec: &str) -> Result<String> {
    let mut h = Sha256::new();
    let path = Path::new(spec);
    let files: Vec<PathBuf> = if crate::model::load::is_smollm2(spec) {
        vec![crate::artifacts::smollm2_gguf()?]
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.ends_with(".safetensors") || n == "config.json"
            })
            .collect();
        v.sort();
        v
    } else {
        // A hub id: the downloaded snapshot folder.
        return model_fingerprint(crate::model::load::download_from_hub(spec)?.to_str().context("path")?);
    };
    for f in files {
        h.update(f.file_name().and_then(|n| n.to_str()).unwrap_or("").as_bytes());
        h.update(crate::artifacts::sha256_file(&f)?.as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Hash of every token of the data store, in order.
pub fn store_fingerprint(store: &GroupStore) -> String {
    let mut h = Sha256::new();
    for g in store.groups() {
        h.update(b"G");
        for &t in g.prompt_ids() {
            h.update(t.to_le_bytes());
        }
        for c in g.candidates() {
            h.update(b"C");
            for &t in c.ids() {
                h.update(t.to_le_bytes());
            }
        }
    }
    format!("{:x}", h.finalize())
}

/// Reference sums by (group, candidate).
#[derive(Debug, Default)]
pub struct RefCache {
    pub values: HashMap<(usize, usize), f32>,
    pub path: Option<PathBuf>,
    /// Pairs computed in this run (0 when everything came from disk).
    pub computed: usize,
}

impl RefCache {
    pub fn open(dir: &Path, key: &str) -> Result<Self> {
        let path = dir.join(format!("{key}.json"));
        let mut values = HashMap::new();
        if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let rows: Vec<(usize, usize, f32)> =
                serde_json::from_str(&text).with_context(|| format!("{}: corrupt reference cache", path.display()))?;
            values = rows.into_iter().map(|(g, c, v)| ((g, c), v)).collect();
        }
        Ok(RefCache { values, path: Some(path), computed: 0 })
    }

    /// Whether every pair of `pairs` has its value.
    pub fn has_all(&self, pairs: &[(usize, usize)]) -> bool {
        pairs.iter().all(|p| self.values.contains_key(p))
    }

    /// Computes the missing pairs with `reference`, batch by batch as training will score them (the
    /// same pairs together, the same layout, on the training device), so a pair's cached value is
    /// bit for bit the policy's at identical weights; then saves. A pair met again in a later batch
    /// keeps its first value.
    pub fn fill(&mut self, batches: &[Vec<(usize, usize)>], reference: &LoadedModel, store: &GroupStore, prefix_sharing: bool, device: &Device) -> Result<()> {
        let before = self.values.len();
        for batch in batches {
            if self.has_all(batch) {
                continue;
            }
            let sums = reference_sums(&reference.model, &reference.rope, store, batch, prefix_sharing, reference.pad_id(), device);
            for (&p, v) in batch.iter().zip(sums) {
                self.values.entry(p).or_insert(v);
            }
        }
        if self.values.len() == before {
            return Ok(());
        }
        self.computed += self.values.len() - before;
        self.save()
    }

    pub fn save(&self) -> Result<()> {
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut rows: Vec<(usize, usize, f32)> = self.values.iter().map(|(&(g, c), &v)| (g, c, v)).collect();
            rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            write_atomic(path, serde_json::to_string(&rows)?.as_bytes())?;
        }
        Ok(())
    }

    pub fn get(&self, pairs: &[(usize, usize)]) -> Result<Vec<f32>> {
        pairs
            .iter()
            .map(|p| self.values.get(p).copied().with_context(|| format!("reference log-prob of {p:?} missing from the cache")))
            .collect()
    }
}
