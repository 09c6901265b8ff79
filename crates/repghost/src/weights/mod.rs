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

pub use apply::{apply_state_dict, state_dict};
pub use load::{load, load_bytes, save, LoadOptions, Loaded};
pub use safetensors_io::Storage;
// The form belongs to the model; weights name it in their metadata.
pub use crate::model::Form;

/// A float tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reference state-dict keys → tensors, ordered.
pub type StateDict = BTreeMap<String, HostTensor>;
