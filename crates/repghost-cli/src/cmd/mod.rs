pub mod bench;
pub mod common;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod export_onnx;
pub mod info;
pub mod predict;
pub mod quantize;
pub mod report;
pub mod report_plot;
pub mod train;
pub mod train_plot;

/// A mistake in the command line (exit code 2, like clap's own errors), as opposed to a
/// problem with the files or the computation (exit code 1).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// `return Err(usage!("…"))` for command-line mistakes.
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => {
        anyhow::Error::new($crate::cmd::Usage(format!($($t)*)))
    };
}
