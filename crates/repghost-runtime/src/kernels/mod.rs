//! The compute kernels, on NHWC maps whose rows (pixels) may be wider than the channels a
//! kernel touches (`ld`), so that concatenation is free: two kernels write disjoint channel
//! ranges of one buffer.

pub mod depthwise;
pub mod gemm256;
pub mod gemm512;
#[cfg(target_arch = "aarch64")]
pub mod gemm_neon;
pub mod pointwise;
pub mod qdepthwise;
pub mod qmaps;
pub mod qpointwise;
#[cfg(target_arch = "aarch64")]
mod qpointwise_sdot;
#[cfg(test)]
mod qtests;
pub mod requant;
pub mod se;
pub mod stem;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};

/// A kernel constructor's check that a weight or bias has the length its shape implies.
pub(crate) fn check_len(layer: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Model(format!(
            "{layer}: {what} holds {got} values, its shape needs {want}"
        )))
    }
}

/// A read-only NHWC view: pixel `p`, channel `c` at `data[p * ld + off + c]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub off: usize,
}

impl<'a> View<'a> {
    pub fn new(data: &'a [f32], ld: usize, off: usize) -> Self {
        View { data, ld, off }
    }
}
