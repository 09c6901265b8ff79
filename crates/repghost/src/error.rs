//! The library's one error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown model '{name}' (known: {known}; any width as repghostnet_<a>_<b>x or repghostnet_<NNN>)"
    )]
    UnknownModel { name: String, known: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it claims to be (truncated, foreign, corrupt).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// The tensors do not fit the model.
    #[error("{path}: weights do not fit {model}: {details}")]
    Mismatch {
        path: PathBuf,
        model: String,
        details: String,
    },
    #[error("{path}: tensor '{key}' holds NaN or infinite values")]
    NonFinite { path: PathBuf, key: String },
    /// No `--model` and the shapes do not single out a variant.
    #[error("{path}: {msg}")]
    Ambiguous { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
    /// The device or its drivers cannot do what was asked (no CUDA GPU, no NCCL).
    #[error("{0}")]
    Device(String),
    /// Training produced a non-finite loss; the last checkpoint is the state before it.
    #[error("loss is {value} at epoch {epoch}, step {step} (update {global_step}); stopped, the last good checkpoint is kept")]
    Diverged {
        value: f32,
        epoch: usize,
        step: usize,
        global_step: usize,
    },
    /// The deploy runtime refused the model or its input.
    #[error("runtime: {0}")]
    Runtime(#[from] repghost_runtime::Error),
    /// A sample could not be read during training or evaluation.
    #[error("{name}: {msg}")]
    Data { name: String, msg: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
