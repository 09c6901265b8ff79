pub mod bench;
pub mod common;
pub mod convert;
pub mod eval;
pub mod info;
pub mod predict;
