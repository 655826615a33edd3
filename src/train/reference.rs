//! Reference log-probs, two ways: a frozen copy of the initial model in memory, or sums computed
//! once and cached on disk, keyed by a hash of the reference weights and of every token of the
//! data (so any change of data, template or truncation settings gives a new key), reused across
//! runs and loss types.

use anyhow::{Context, Result};
use burn::module::Module;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::{Batcher, BatcherState, GroupStore};
use crate::distributed::{Collective, Shard, sync};
use crate::model::load::{LoadedModel, load_model};
use crate::model::lora::lora_off;
use crate::model::save::write_atomic;
use crate::scores::Scorer;

use super::config::{ReferenceMode, TrainConfig};
use super::step;

/// The reference log-probs of a run.
pub enum Reference {
    /// A frozen copy of the reference model, run beside the policy.
    Frozen(Box<LoadedModel>),
    /// Sums computed once (before training) and read from disk.
    Cached(RefCache),
    /// The policy itself with its adapters off.
    LoraOff,
}

impl Reference {
    /// Builds the run's reference for `batches` (the `(group, candidate)` pairs of every batch the
    /// run will score, in order: the cache is filled batch by batch as training will score them).
    /// `scorer` is the policy's; `cache_name` separates the train and eval caches. Returns the
    /// reference and the seconds spent filling the cache.
    ///
    /// Data parallel: `batches` are this rank's shards; each rank computes the pairs of its own
    /// shards, the new values are gathered on every rank and rank 0 writes the one cache file.
    pub fn build(
        cfg: &TrainConfig,
        scorer: &Scorer,
        store: &GroupStore,
        batches: &[Vec<(usize, usize)>],
        cache_name: &str,
        comm: &dyn Collective,
    ) -> Result<(Reference, f64)> {
        let spec = cfg.reference.path.clone().unwrap_or_else(|| cfg.model.path.clone());
        let t0 = std::time::Instant::now();
        match cfg.reference.mode {
            ReferenceMode::Frozen => {
                Ok((Reference::Frozen(Box::new(load_reference(cfg, &spec, &scorer.device)?)), 0.0))
            }
            ReferenceMode::LoraOff => Ok((Reference::LoraOff, 0.0)),
            ReferenceMode::Cached => {
                // The compute dtype changes the numbers: a bf16 reference is cached apart from a float32 one.
                let precision = match cfg.model.dtype {
                    crate::device::Precision::Float32 => "",
                    crate::device::Precision::Bfloat16 => "-bf16",
                };
                let key =
                    format!("{}-{}{precision}", &model_fingerprint(&spec)?[..16], &store_fingerprint(store)[..16]);
                let dir = cfg.reference.cache_dir.clone().unwrap_or_else(|| {
                    cfg.output.dir.parent().unwrap_or(Path::new(".")).join(".ref-cache").join(cache_name)
                });
                let mut cache = RefCache::open(&dir, &key)?;
                let before = cache.values.len();
                let mut new = Vec::new();
                if !batches.iter().all(|b| cache.has_all(b)) {
                    let m = load_reference(cfg, &spec, &scorer.device)?;
                    new = cache.fill(batches, &scorer.with_model(&m.model, &m.rope, m.pad_id()), store);
                }
                let new = sync::gather_pairs(comm, new)?;
                if !new.is_empty() {
                    for (p, v) in new {
                        cache.values.entry(p).or_insert(v);
                    }
                    cache.computed = cache.values.len() - before;
                    if comm.rank() == 0 {
                        cache.save()?;
                    }
                }
                Ok((Reference::Cached(cache), t0.elapsed().as_secs_f64()))
            }
        }
    }

    /// Reference sums of `pairs`, scored exactly as the policy scores them (same layout, same device:
    /// the training device, autodiff included, with gradients off), so identical weights give
    /// identical numbers and the first step's rewards are exactly 0. `policy` is read only by `LoraOff`.
    pub fn sums(&self, policy: &Scorer, store: &GroupStore, pairs: &[(usize, usize)]) -> Result<Vec<f32>> {
        match self {
            Reference::Frozen(m) => Ok(policy.with_model(&m.model, &m.rope, m.pad_id()).pairs_host(store, pairs)),
            Reference::Cached(c) => c.get(pairs),
            Reference::LoraOff => {
                let off = lora_off(policy.model).no_grad();
                Ok(policy.with_model(&off, policy.rope, policy.pad_id).pairs_host(store, pairs))
            }
        }
    }

    /// Pairs computed into the cache by this run (0 for the other modes).
    pub fn computed(&self) -> usize {
        if let Reference::Cached(c) = self { c.computed } else { 0 }
    }
}

/// The (group, candidate) pairs of `shard`'s part of each of the next `n` batches from `state`
/// (`batch` is the global batch), in scoring order.
pub fn planned_batches(
    store: &GroupStore,
    batch: &crate::data::BatchConfig,
    weak: &crate::data::WeakConfig,
    seed: u64,
    state: BatcherState,
    n: usize,
    shard: Shard,
) -> Result<Vec<Vec<(usize, usize)>>> {
    let mut b = Batcher::with(store, batch, weak, seed)?;
    b.restore(state)?;
    Ok((0..n).map(|_| step::arrange(&shard.take(b.next_batch()), store).pairs).collect())
}

/// The reference model on `device` (the training device), gradients off.
fn load_reference(cfg: &TrainConfig, spec: &str, device: &burn::tensor::Device) -> Result<LoadedModel> {
    let mut m = load_model(spec, device)?;
    m.model = m.model.no_grad();
    m.model.precision = cfg.model.dtype;
    m.model.fused_head = cfg.model.fused_head;
    Ok(m)
}

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
    /// Summed reference log-prob by (group, candidate).
    pub values: HashMap<(usize, usize), f32>,
    /// The JSON file backing the cache (`None`: in memory only).
    pub path: Option<PathBuf>,
    /// Pairs computed in this run (0 when everything came from disk).
    pub computed: usize,
}

impl RefCache {
    /// Opens the cache file `<dir>/<key>.json` (empty if it does not exist yet).
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
    /// bit for bit the policy's at identical weights. A pair met again in a later batch keeps its
    /// first value. Returns the new entries (also added to the cache; [`RefCache::save`] writes them).
    pub fn fill(
        &mut self,
        batches: &[Vec<(usize, usize)>],
        reference: &Scorer,
        store: &GroupStore,
    ) -> Vec<((usize, usize), f32)> {
        let mut new = Vec::new();
        for batch in batches {
            if self.has_all(batch) {
                continue;
            }
            let sums = reference.pairs_host(store, batch);
            for (&p, v) in batch.iter().zip(sums) {
                if let std::collections::hash_map::Entry::Vacant(e) = self.values.entry(p) {
                    e.insert(v);
                    new.push((p, v));
                }
            }
        }
        new
    }

    /// Writes the cache atomically (sorted rows of `[group, candidate, sum]`).
    pub fn save(&self) -> Result<()> {
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut rows: Vec<(usize, usize, f32)> = self.values.iter().map(|(&(g, c), &v)| (g, c, v)).collect();
            rows.sort_by_key(|r| (r.0, r.1));
            write_atomic(path, serde_json::to_string(&rows)?.as_bytes())?;
        }
        Ok(())
    }

    /// The cached sums of `pairs`, in order; an error names a missing pair.
    pub fn get(&self, pairs: &[(usize, usize)]) -> Result<Vec<f32>> {
        pairs
            .iter()
            .map(|p| {
                self.values
                    .get(p)
                    .copied()
                    .with_context(|| format!("reference log-prob of {p:?} missing from the cache"))
            })
            .collect()
    }
}
