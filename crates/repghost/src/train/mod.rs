//! Training: the official recipe (SGD-Nesterov, warm-up + cosine, label smoothing, EMA, timm
//! augmentations) in a loop of our own, so that every piece of state it keeps can be written
//! to a checkpoint and a run killed at any moment resumes exactly.

pub mod checkpoint;
pub mod config;
pub mod ddp;
pub mod ema;
pub mod eval;
pub mod loss;
pub mod preset;
pub mod schedule;
pub mod sgd;
pub mod start;
pub mod step;
mod trainer;

pub use crate::engine::{Engine, Logits};
pub use checkpoint::{EpochRow, TrainState};
pub use config::{scaled_lr, TrainConfig};
pub use eval::{evaluate, evaluate_streaming, evaluate_with, Evaluation};
pub use preset::{DataShape, Preset};
pub use trainer::{
    clear_run, Data, Observer, Outcome, StepInfo, Summary, Trainer, CHECKPOINT_EVERY, RUN_FILES,
};
