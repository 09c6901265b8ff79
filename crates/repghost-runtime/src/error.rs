//! The runtime's one error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The weights are not a deploy-form RepGhostNet/GhostNet this engine can run.
    #[error("{0}")]
    Model(String),
    /// An input that does not fit the model or the workspace.
    #[error("{0}")]
    Input(String),
}
