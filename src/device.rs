//! Where tensors live and in which precision: the one place that turns `model.device` /
//! `--device` (`cpu`, `cuda`, `cuda:N`, `wgpu`) into a burn [`Device`], and `model.dtype`
//! (`float32`, `bfloat16`) into the compute dtype of the forward pass.
//!
//! ```
//! use epa::device::DeviceSpec;
//! let spec: DeviceSpec = "cpu".parse().unwrap();
//! let device = spec.device().unwrap(); // burn's flex CPU backend
//! assert_eq!(spec.to_string(), "cpu");
//! assert!("cuda:1".parse::<DeviceSpec>().is_ok()); // parses in every build…
//! # let _ = device;
//! ```
//!
//! …but `cuda` and `wgpu` only give a device in a binary built with that cargo feature; otherwise
//! [`DeviceSpec::device`] says how to rebuild. Tests take their device from [`DeviceSpec::for_tests`]
//! (`EPA_TEST_DEVICE=wgpu cargo test --features wgpu-unfused` runs them on burn's GPU code path).

use anyhow::{Result, bail};
use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A compute device, as written in configs and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// burn's `flex` CPU backend (every build).
    #[default]
    Cpu,
    /// An NVIDIA GPU by index (`cuda` = `cuda:0`); needs the `cuda` feature.
    Cuda(usize),
    /// The default wgpu adapter (Vulkan, Metal, DX12 or OpenGL; Mesa's llvmpipe on a machine
    /// without a GPU); needs the `wgpu` feature.
    Wgpu,
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" | "flex" => return Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => return Ok(DeviceSpec::Cuda(0)),
            "wgpu" => return Ok(DeviceSpec::Wgpu),
            _ => {}
        }
        if let Some(n) = t.strip_prefix("cuda:")
            && let Ok(i) = n.parse::<usize>()
        {
            return Ok(DeviceSpec::Cuda(i));
        }
        bail!("unknown device {s:?}: expected \"cpu\", \"cuda\", \"cuda:N\" or \"wgpu\"")
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl schemars::JsonSchema for DeviceSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceSpec".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^(cpu|cuda(:[0-9]+)?|wgpu)$" })
    }
}

/// The environment variable that moves the test suite to another device.
pub const TEST_DEVICE_ENV: &str = "EPA_TEST_DEVICE";

impl DeviceSpec {
    /// The burn device (without autodiff). Fails with a clear message when this binary was built
    /// without the backend, or when the backend cannot start (no driver, no adapter).
    pub fn device(&self) -> Result<Device> {
        let device = self.unchecked()?;
        if matches!(self, DeviceSpec::Cpu) {
            return Ok(device);
        }
        // GPU backends start lazily and panic on the first tensor when they cannot: start them here
        // and turn the panic into an error that names the device.
        let probe = device.clone();
        let started = std::panic::catch_unwind(move || {
            let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &probe);
            t.sum().into_scalar::<f32>()
        });
        match started {
            Ok(3.0) => Ok(device),
            Ok(v) => bail!("device {self}: a test sum gave {v} instead of 3"),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown error".into());
                bail!("device {self} cannot start: {why}")
            }
        }
    }

    #[allow(unreachable_code)]
    fn unchecked(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::flex()),
            DeviceSpec::Cuda(_i) => {
                #[cfg(feature = "cuda")]
                return Ok(Device::cuda(*_i));
                bail!(
                    "device {self}: this epa was built without the `cuda` feature: rebuild with \
                     `cargo build --release --features cuda` (offline: scripts/build-cuda.sh)"
                )
            }
            DeviceSpec::Wgpu => {
                #[cfg(feature = "wgpu-unfused")]
                return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
                bail!(
                    "device wgpu: this epa was built without the `wgpu` feature: rebuild with `cargo build --release --features wgpu`"
                )
            }
        }
    }

    /// Whether this is a GPU (or GPU-path) device.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, DeviceSpec::Cpu)
    }

    /// The device the test suite runs models on: `$EPA_TEST_DEVICE` (`cpu` when unset).
    pub fn for_tests() -> DeviceSpec {
        match std::env::var(TEST_DEVICE_ENV) {
            Ok(s) if !s.trim().is_empty() => s.parse().unwrap_or_else(|e| panic!("{TEST_DEVICE_ENV}={s:?}: {e}")),
            _ => DeviceSpec::Cpu,
        }
    }
}

/// The dtype of weights and activations in the forward pass.
///
/// `bfloat16` is mixed precision in the way of PyTorch's autocast: parameters, gradients and
/// AdamW's moments stay float32 (the master weights); each forward casts the weights it multiplies
/// to bf16 and runs matmuls and element-wise work in bf16, while RMSNorm statistics, the attention
/// softmax, the log-softmax over the vocabulary and every loss are computed in float32. Reference
/// log-probs are stored as float32.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32 (the default; exact against transformers to ~1e-5).
    #[default]
    #[serde(alias = "f32", alias = "fp32")]
    Float32,
    /// bf16 compute with float32 master weights (GPU; slow on the CPU, where it is emulated).
    #[serde(alias = "bf16")]
    Bfloat16,
}

impl Precision {
    /// The float dtype the forward pass computes in.
    pub fn float_dtype(self) -> burn::tensor::FloatDType {
        match self {
            Precision::Float32 => burn::tensor::FloatDType::F32,
            Precision::Bfloat16 => burn::tensor::FloatDType::BF16,
        }
    }

    /// Checks that `device` computes in this precision.
    pub fn check(self, spec: DeviceSpec, device: &Device) -> Result<()> {
        if self == Precision::Bfloat16 && !device.supports_dtype(burn::tensor::FloatDType::BF16) {
            bail!("model.dtype = \"bfloat16\": device {spec} has no bf16 arithmetic; use \"float32\"");
        }
        Ok(())
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Float32 => "float32",
            Precision::Bfloat16 => "bfloat16",
        })
    }
}

impl FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float32" | "f32" | "fp32" => Ok(Precision::Float32),
            "bfloat16" | "bf16" => Ok(Precision::Bfloat16),
            _ => bail!("unknown dtype {s:?}: expected \"float32\" or \"bfloat16\""),
        }
    }
}

/// Where a command's model runs and in which dtype (what `--device` and `--dtype` give a library
/// entry point such as [`crate::bench::run`] or [`crate::demo::run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceOptions {
    /// Where the model runs: `cpu`, `cuda`, `cuda:N` or `wgpu`.
    pub device: DeviceSpec,
    /// Compute dtype: `float32` or `bfloat16` (bf16 compute, float32 weights; meant for GPUs).
    pub dtype: Precision,
}

impl DeviceOptions {
    /// The burn device, checked to compute in `dtype`.
    pub fn device(&self) -> Result<Device> {
        let d = self.device.device()?;
        self.dtype.check(self.device, &d)?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("wgpu", DeviceSpec::Wgpu),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("CUDA:0".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        let e = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("\"tpu\"") && e.contains("cuda:N"), "{e}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn missing_backend_says_how_to_rebuild() {
        #[cfg(not(feature = "cuda"))]
        {
            let e = DeviceSpec::Cuda(0).device().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        #[cfg(not(feature = "wgpu-unfused"))]
        {
            let e = DeviceSpec::Wgpu.device().unwrap_err().to_string();
            assert!(e.contains("--features wgpu"), "{e}");
        }
        assert!(DeviceSpec::Cpu.device().is_ok());
    }

    #[test]
    fn precision_parses() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bfloat16);
        assert_eq!("float32".parse::<Precision>().unwrap(), Precision::Float32);
        assert!("fp8".parse::<Precision>().is_err());
    }
}
