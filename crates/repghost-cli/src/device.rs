//! Choice of burn device. The CPU (`flex`) backend is always built; GPU backends are cargo
//! features of this crate (`--features wgpu` or `cuda`).

use anyhow::{bail, Result};
use burn::tensor::Device;

#[derive(Clone, Copy, Debug, clap::ValueEnum, Default)]
pub enum DeviceArg {
    /// burn's pure-Rust CPU backend (flex).
    #[default]
    Cpu,
    /// Any GPU through wgpu (build with --features wgpu).
    Wgpu,
    /// NVIDIA GPU 0 (build with --features cuda).
    Cuda,
}

pub fn device(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => Ok(Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => bail!(
            "this build has no {other:?} backend; rebuild with --features {}",
            format!("{other:?}").to_lowercase()
        ),
    }
}
