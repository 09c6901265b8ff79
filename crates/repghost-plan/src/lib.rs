//! The structure of RepGhostNet (Chen et al., arXiv 2211.06088) and of GhostNet, its
//! baseline, with no deep-learning dependency: the stage tables and configuration
//! ([`config`]), and the [`Plan`] of every layer derived from them (channels, strides,
//! activations, state-dict keys, feature taps). The burn model, the checkpoint tools and the
//! deploy runtime all describe the network through this crate.

#![forbid(unsafe_code)]

pub mod config;
pub mod names;
pub mod plan;

pub use config::{make_divisible, Activation, Arch, NetConfig, StageRow, HEAD_CHANNELS};
pub use plan::{Counts, Form, Plan, TensorSpec, BN_EPSILON, FINAL_STAGE};
