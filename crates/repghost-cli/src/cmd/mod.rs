pub mod bench;
pub mod common;
pub mod convert;
pub mod eval;
pub mod export_onnx;
pub mod info;
pub mod predict;
