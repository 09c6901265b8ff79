pub mod convert;
pub mod info;
pub mod predict;
