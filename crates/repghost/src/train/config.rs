//! Every setting of a training run, saved as `config.json` next to its checkpoints.

use serde::{Deserialize, Serialize};

use crate::config::NetConfig;
use repghost_data::{Augment, Preprocess};

/// The official recipe's batch-size scaling: lr 0.6 for a global batch of 1024.
pub const REFERENCE_LR: f64 = 0.6;
pub const REFERENCE_BATCH: usize = 1024;

/// Linear scaling of the reference learning rate to `batch_size`.
pub fn scaled_lr(batch_size: usize) -> f64 {
    REFERENCE_LR * batch_size as f64 / REFERENCE_BATCH as f64
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Variant name, e.g. `repghostnet_050`.
    pub model: String,
    pub net: NetConfig,
    pub epochs: usize,
    /// Global batch (split across devices when there are several).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup_epochs: f64,
    pub warmup_lr: f64,
    pub min_lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 on conv and linear weights only.
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Model EMA decay before the short-run adjustment; 0 disables the EMA.
    pub ema_decay: f64,
    pub augment: Augment,
    pub eval: Preprocess,
    pub seed: u64,
    /// Train on the first N training images only.
    pub limit: Option<usize>,
    /// Evaluate on the first N validation images only.
    pub val_limit: Option<usize>,
    /// Where the weights came from before training (`--init`), if not random.
    pub init: Option<String>,
    /// A human description of the data source.
    pub data: String,
    /// Threads that each compute the gradient of a part of every batch (CPU data
    /// parallelism, like DDP: each part normalizes with its own BatchNorm statistics).
    #[serde(default = "one")]
    pub workers: usize,
}

fn one() -> usize {
    1
}
