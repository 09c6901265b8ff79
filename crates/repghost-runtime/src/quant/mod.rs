//! INT8 inference: static post-training quantization ([`Calibrator`]), the INT8 file format
//! (`format.rs`), the INT8 network the runtime runs (`engine.rs`), and the simulated
//! quantization it is tested against ([`Simulator`]).
//!
//! Weights are symmetric s8 per output channel; activations u8 per tensor with a zero point
//! (`real = scale · (q − zp)`), calibrated on images; sums are exact i32; squeeze-excite,
//! pooling, `conv_head` and the classifier compute in float.
//!
//! ```no_run
//! use repghost_runtime::quant::{Calibrator, QuantizeOptions};
//! use repghost_runtime::{Layout, Model};
//! let mut cal = Calibrator::from_bytes(&std::fs::read("deploy.safetensors")?)?;
//! let images = vec![0.0f32; 8 * 3 * 224 * 224]; // normalized, NCHW
//! cal.observe(&images, 8, 224, 224, Layout::Nchw)?;
//! let int8 = cal.quantize(&QuantizeOptions::default())?;
//! let model = Model::from_bytes(&int8)?; // runs the INT8 kernels
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod calibrate;
pub(crate) mod engine;
pub(crate) mod format;
mod observe;
pub(crate) mod reference;
mod sqnr;

pub use calibrate::{dequantize, is_int8, Calibrator, FloatTensor, QuantizeOptions, Simulator};
pub use format::INT8;
pub use observe::Clip;
pub use sqnr::PointSqnr;
