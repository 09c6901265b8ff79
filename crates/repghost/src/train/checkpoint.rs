//! The resumable checkpoint `last.ckpt`: one safetensors file holding the model
//! (`model.<key>`), its EMA (`ema.<key>`), the momentum buffers (`momentum.<key>`), and in its
//! metadata the run's configuration and progress (epoch, step, history, partial-epoch sums).
//! Data order and augmentation are functions of (seed, epoch, position), so these are all a
//! resumed run needs to continue exactly where the interrupted one stopped.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::weights::safetensors_io::{self, serialize, Storage};
use crate::weights::StateDict;

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    pub train_loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub ema_top1: Option<f64>,
    pub ema_top5: Option<f64>,
    pub images_per_s: f64,
    /// Seconds since the run started (excluding time between an interruption and its resume).
    pub wall_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Updates done in the epoch under way.
    pub step_in_epoch: usize,
    pub global_step: usize,
    /// Sum of per-image losses and images seen in the epoch under way.
    pub epoch_loss_sum: f64,
    pub epoch_images: usize,
    /// Training seconds spent in the epoch under way.
    pub epoch_train_s: f64,
    pub best_top1: f64,
    pub best_epoch: usize,
    pub history: Vec<EpochRow>,
    /// Seconds of training and evaluation so far.
    pub elapsed_s: f64,
}

pub struct Checkpoint {
    pub model: StateDict,
    pub ema: Option<StateDict>,
    pub momentum: StateDict,
    pub state: TrainState,
    pub config: TrainConfig,
}

const FORMAT: &str = "repghost-checkpoint";

pub fn to_bytes(ck: &Checkpoint) -> Result<Vec<u8>> {
    let mut sd = StateDict::new();
    let mut put = |prefix: &str, part: &StateDict| {
        for (k, t) in part {
            sd.insert(format!("{prefix}.{k}"), t.clone());
        }
    };
    put("model", &ck.model);
    if let Some(e) = &ck.ema {
        put("ema", e);
    }
    put("momentum", &ck.momentum);
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert("state".to_string(), json(&ck.state)?);
    md.insert("config".to_string(), json(&ck.config)?);
    serialize(&sd, Some(md), Storage::F32)
}

pub fn save(path: &Path, ck: &Checkpoint) -> Result<()> {
    crate::fsutil::write_atomic(path, &to_bytes(ck)?)
}

pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(path, &bytes)
}

/// [`load`] on bytes in memory; `path` names the source in messages.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let fmt = |m: String| Error::format(path, m);
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| fmt(format!("not a repghost checkpoint ({e})")))?;
    let md = header.metadata().clone().unwrap_or_default();
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(fmt(
            "not a repghost training checkpoint (metadata 'format' is not repghost-checkpoint)".into(),
        ));
    }
    let parse = |k: &str| -> Result<&String> {
        md.get(k)
            .ok_or_else(|| fmt(format!("checkpoint metadata lacks '{k}'")))
    };
    let state: TrainState = serde_json::from_str(parse("state")?)
        .map_err(|e| fmt(format!("checkpoint 'state' is not valid ({e})")))?;
    let config: TrainConfig = serde_json::from_str(parse("config")?)
        .map_err(|e| fmt(format!("checkpoint 'config' is not valid ({e})")))?;
    let (all, _) = safetensors_io::read(path, bytes)?;
    let mut parts: [StateDict; 3] = Default::default();
    let mut has_ema = false;
    for (k, t) in all {
        let (prefix, key) = k
            .split_once('.')
            .ok_or_else(|| fmt(format!("unexpected tensor '{k}'")))?;
        let slot = match prefix {
            "model" => 0,
            "ema" => {
                has_ema = true;
                1
            }
            "momentum" => 2,
            _ => return Err(fmt(format!("unexpected tensor '{k}'"))),
        };
        parts[slot].insert(key.to_string(), t);
    }
    let [model, ema, momentum] = parts;
    Ok(Checkpoint {
        model,
        ema: has_ema.then_some(ema),
        momentum,
        state,
        config,
    })
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))
}

/// `metrics.csv`: one row per epoch, accuracies in percent.
pub fn metrics_csv(rows: &[EpochRow]) -> String {
    let mut s =
        String::from("epoch,lr,train_loss,val_top1,val_top5,ema_val_top1,ema_val_top5,images_per_s,wall_s\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{:.4}", 100.0 * v)).unwrap_or_default();
    for r in rows {
        s.push_str(&format!(
            "{},{:.6e},{:.5},{:.4},{:.4},{},{},{:.1},{:.1}\n",
            r.epoch,
            r.lr,
            r.train_loss,
            100.0 * r.top1,
            100.0 * r.top5,
            opt(r.ema_top1),
            opt(r.ema_top5),
            r.images_per_s,
            r.wall_s
        ));
    }
    s
}
