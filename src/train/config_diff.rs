//! Resume compares the run's config with the checkpoint's: a changed learning rate, loss, batch or
//! length would silently make a run that no single config describes.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// Keys that may change between the run and its resumption: where and how it runs and is shown,
/// not what it computes.
const FREE: [&str; 6] =
    ["model.device", "model.fused_head", "output.dir", "output.progress", "output.overwrite", "reference.cache_dir"];

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `key: old → new` for every key that differs, keys of [`FREE`] left out.
pub fn differences(old: &str, new: &str) -> Result<Vec<String>> {
    let parse = |s: &str| -> Result<BTreeMap<String, String>> {
        let v: toml::Value = toml::from_str(s)?;
        let mut m = BTreeMap::new();
        flatten("", &v, &mut m);
        Ok(m)
    };
    let (a, b) = (parse(old)?, parse(new)?);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let none = "(unset)".to_string();
    Ok(keys
        .into_iter()
        .filter(|k| !FREE.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} → {}", a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none)))
        .collect())
}

/// Refuses to resume `ckpt` under a config that differs from the one it was written with, unless
/// `allow`; then the differences are printed.
pub fn check_resume(ckpt: &Path, config_toml: &str, allow: bool) -> Result<()> {
    let path = ckpt.join("config.toml");
    let old = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let diff = differences(&old, config_toml).with_context(|| format!("{}: not a valid config", path.display()))?;
    if diff.is_empty() {
        return Ok(());
    }
    let list = diff.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n");
    if !allow {
        bail!(
            "the config differs from the one {} was written with:\n{list}\nresume with the same config, or pass \
             --allow-config-change to continue under the new one",
            ckpt.display()
        );
    }
    eprintln!("resuming {} under a changed config (--allow-config-change):\n{list}", ckpt.display());
    Ok(())
}
