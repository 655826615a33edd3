//! What the test modules share: fixture paths and the device models run on.

use burn::tensor::Device;
use epa::device::DeviceSpec;
use std::path::PathBuf;

/// `tests/fixtures/<name>` (copied from shared/fixtures; see tests/fixtures/README.md). A test
/// binary carried to another machine (scripts/gpu_check.py) finds the repository through
/// `$EPA_REPO_ROOT` instead of the folder it was built in.
pub fn fixture(name: &str) -> PathBuf {
    let root = std::env::var_os("EPA_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    root.join("tests/fixtures").join(name)
}

/// The device under test: `$EPA_TEST_DEVICE` (`cpu` when unset).
pub fn spec() -> DeviceSpec {
    DeviceSpec::for_tests()
}

/// [`spec`] as a burn device (without autodiff).
pub fn device() -> Device {
    spec().device().unwrap_or_else(|e| panic!("{}: {e:#}", epa::device::TEST_DEVICE_ENV))
}

/// `--set model.device=…` for training tests, so `epa train` runs on the device under test.
pub fn device_set() -> String {
    format!("model.device={:?}", spec().to_string())
}
