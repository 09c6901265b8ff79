//! A dependency-light CPU engine for deploy-form RepGhostNet and GhostNet (no deep-learning
//! framework): it loads the re-parameterized weights that `repghost convert` writes and runs
//! the fused graph — NHWC maps, 1×1 convs as GEMMs on weights packed at load time (AVX-512,
//! AVX2 and NEON kernels of its own, the gemm crate elsewhere) with fused bias, activation and
//! residual add, hand-vectorized depthwise kernels (x86 and NEON) with the same fusions, bottlenecks run depth-first in
//! strips of rows, SE in place, and a workspace planned once so that inference allocates
//! nothing.
//!
//! ```no_run
//! use repghost_runtime::{Layout, Model};
//! let model = Model::load("deploy.safetensors".as_ref())?;
//! let mut ws = model.workspace(1, 224, 224)?;       // one per thread
//! let image = vec![0.0f32; 3 * 224 * 224];          // normalized, NCHW
//! let logits = model.run(&mut ws, &image, Layout::Nchw)?;
//! # Ok::<(), repghost_runtime::Error>(())
//! ```

// Kernels take their geometry, views and epilogue flags as plain arguments, like BLAS.
#![allow(clippy::too_many_arguments)]
// Every unsafe operation sits in its own block with the reason it holds.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The public surface is `Model`, `Workspace`, the layouts, feature maps, profiles, errors and
// the SIMD level; kernels, their packing and the thread team are private, so that safe code
// outside the crate cannot hand a kernel a buffer or a shape it was not built for.
mod act;
mod depth;
mod error;
mod exec;
mod f16;
mod kernels;
mod model;
mod profile;
pub mod quant;
mod simd;
mod team;
mod vector;

pub use error::{Error, Result};
pub use exec::{FeatureMap, Layout, Workspace, DEPTH_FIRST_MIN};
pub use model::{Model, Tensors};
pub use profile::{time_sgemm, PointwiseTiming, Profile};
pub use repghost_plan::{NetConfig, Plan};
pub use simd::{level as simd_level, Level as SimdLevel};
