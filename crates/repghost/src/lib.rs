//! RepGhostNet in burn: the model family of *RepGhost: A Hardware-Efficient Ghost Module via
//! Re-parameterization* (Chen et al., arXiv 2211.06088), its GhostNet baseline, exact
//! re-parameterization, and import of official and timm checkpoints.

#![forbid(unsafe_code)]

pub mod bench;
mod bnorm;
pub mod bottleneck;
pub mod config;
mod dwconv;
pub mod engine;
pub mod error;
pub mod ghost_module;
pub mod ghostnet;
mod lanes;
pub mod layers;
pub mod metrics;
pub mod net;
pub mod onnx;
mod ops;
pub mod quantize;
pub mod reparam;
pub mod threads;
pub mod variants;

pub use config::{Activation, Arch, NetConfig};
pub use error::{Error, Result};
pub use net::{GhostNet, Net, RepGhostNet};
pub use repghost_plan::{plan, Plan};
pub mod fsutil;
pub mod model;
pub mod npy;
pub mod weights;

pub use model::Model;
pub mod random;
pub mod train;
