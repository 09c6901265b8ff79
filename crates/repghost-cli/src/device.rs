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

/// `n` devices of one kind for data-parallel training: GPUs 0..n, or the CPU n times (then
/// the parts of each batch run on n threads). With wgpu, the first `n` adapters the backend
/// lists; where it lists fewer (a machine with one GPU, or only Mesa's software Vulkan
/// driver), `n` replicas share the first, so that the multi-device path runs anyway.
pub fn devices(arg: DeviceArg, n: usize) -> Result<Vec<Device>> {
    let n = n.max(1);
    match arg {
        DeviceArg::Cpu => Ok(vec![Device::flex(); n]),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => {
            let found = Device::enumerate(burn::tensor::DeviceType::Wgpu);
            match found.len() {
                0 => bail!("wgpu found no adapter (is a Vulkan, Metal or DirectX driver installed?)"),
                k if k >= n => Ok(found[..n].to_vec()),
                _ => Ok(vec![found[0].clone(); n]),
            }
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => Ok((0..n).map(Device::cuda).collect()),
        #[allow(unreachable_patterns)]
        other => device(other).map(|d| vec![d; n]),
    }
}
