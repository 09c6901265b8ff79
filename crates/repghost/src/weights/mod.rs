//! Weights: the native safetensors format, import of official/timm checkpoints, and the
//! mapping of a flat state dict onto a [`Model`](crate::model::Model).

pub(crate) mod apply;
pub mod detect;
pub mod keys;
pub mod load;
pub mod pickle;
pub mod safetensors_io;
pub mod torch;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apply::{apply_state_dict, state_dict};
pub use load::{load, load_bytes, save, LoadOptions, Loaded};

/// Which structure a set of weights has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Every BatchNorm and fusion branch present: trainable.
    Train,
    /// The official `convert.py` output: fusion branches folded into the cheap ops, every
    /// other BatchNorm kept.
    Fused,
    /// Every BatchNorm folded (ours): convs with bias, SE, adds, activations, classifier.
    Deploy,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Train => "train",
            Form::Fused => "fused",
            Form::Deploy => "deploy",
        }
    }
}

/// A float tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reference state-dict keys → tensors, ordered.
pub type StateDict = BTreeMap<String, HostTensor>;
