//! What the test modules share: fixture paths and the device models run on.

use burn::tensor::Device;
use epa::device::DeviceSpec;
use std::path::PathBuf;

/// `tests/fixtures/<name>` (copied from shared/fixtures; see tests/fixtures/README.md).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
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
