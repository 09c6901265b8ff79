//! Images and datasets for repghost, with no deep-learning dependency: decoding and eval
//! preprocessing identical to the PyTorch reference (Pillow + torchvision + timm), the
//! ImageFolder layout, and Fashion-MNIST's IDX files.

pub mod augment;
pub mod dataset;
pub mod error;
pub mod folder;
pub mod idx;
pub mod image;
mod jpeg;
pub mod labels;
pub mod open;
pub mod resize;
pub mod rng;
pub mod transform;

pub use crate::image::{decode, Image};
pub use augment::{Augment, Crop};
pub use error::{Error, Result};
pub use open::open;
pub use resize::{resize, Interpolation};
pub use rng::Rng;
pub use transform::Preprocess;
