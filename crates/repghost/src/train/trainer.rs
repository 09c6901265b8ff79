//! The training loop: epochs of shuffled, augmented batches, one SGD update each, the EMA
//! after every update, evaluation of model and EMA after every epoch, and crash-safe files:
//! `config.json`, `metrics.csv`, `last.ckpt` (resumable), `best.safetensors` and, at the end,
//! `deploy.safetensors`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::{ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use repghost_data::dataset::{batches, batches_with, Batch, Dataset};
use repghost_data::Rng;

use super::checkpoint::{self, metrics_csv, Checkpoint, EpochRow, TrainState};
use super::config::TrainConfig;
use super::ddp::AllReduce;
use super::ema::Ema;
use super::eval::{evaluate, evaluate_with};
use super::schedule::{warmup_steps, Schedule};
use super::sgd::Sgd;
use super::step::{gradients, StepBatch};
use crate::config::HEAD_CHANNELS;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::metrics::Report;
use crate::model::Model;
use crate::weights::{apply_state_dict, save, state_dict, Form, Storage};

/// Training and validation samples.
pub struct Data {
    pub train: Arc<dyn Dataset>,
    pub val: Arc<dyn Dataset>,
}

/// Progress of one update, for progress bars and logs.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

/// What the caller sees of a run; every method has a silent default.
pub trait Observer {
    /// `done` updates of this epoch were completed before (a resumed run).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize, _done: usize) {}
    fn step(&mut self, _s: &StepInfo) {}
    fn evaluating(&mut self, _epoch: usize) {}
    fn epoch_end(&mut self, _row: &EpochRow, _history: &[EpochRow]) {}
    fn message(&mut self, _msg: &str) {}
}

pub struct Summary {
    pub history: Vec<EpochRow>,
    /// Validation report of the deployed (EMA if enabled) model.
    pub deploy_report: Report,
    /// Largest |train − deploy| logit difference relative to the largest |logit|.
    pub reparam_rel_diff: f64,
    pub seconds: f64,
}

pub enum Outcome {
    Finished(Box<Summary>),
    /// Stopped on request; `last.ckpt` holds the state after `global_step` updates.
    Interrupted {
        epoch: usize,
        global_step: usize,
    },
}

/// The files a run writes in its folder (`curves.png` is the CLI's plot of `metrics.csv`).
pub const RUN_FILES: [&str; 6] = [
    "config.json",
    "metrics.csv",
    "curves.png",
    "last.ckpt",
    "best.safetensors",
    "deploy.safetensors",
];

/// Removes a previous run's [`RUN_FILES`] from `out`, and nothing else: the folder and any
/// other file in it stay.
pub fn clear_run(out: &Path) -> Result<()> {
    for f in RUN_FILES {
        let p = out.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    Ok(())
}

/// The fixed quantities of one `run` call.
struct Plan {
    n_train: usize,
    steps: usize,
    sched: Schedule,
    started: Instant,
    /// Training time of the run before this call (a resumed run).
    elapsed_before: f64,
}

impl Plan {
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }
}

pub struct Trainer {
    pub cfg: TrainConfig,
    out: PathBuf,
    device: Device,
    /// Devices of the data-parallel parts (autodiff); the first is `device`.
    devices: Vec<Device>,
    /// Replicas on other GPUs whose gradients burn all-reduces ([`Trainer::with_all_reduce`]).
    all_reduce: Option<AllReduce>,
    model: Model,
    ema: Option<Ema>,
    sgd: Sgd,
    pub state: TrainState,
    /// Computes validation logits; burn's forward pass when `None`.
    engine: Option<Engine>,
    /// Writes `last.ckpt` in the middle of an epoch once this long has passed since the last
    /// one (`None`: at epoch ends and on a stop request only).
    checkpoint_every: Option<Duration>,
    last_checkpoint: Instant,
}

/// The default interval of recovery checkpoints (timm's `--recovery-interval` serves the same
/// purpose): a process killed without a signal loses at most this much training.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

impl Trainer {
    /// A fresh run in `out` (created if needed); `init` are starting weights (train form, on
    /// any device), otherwise the model is initialised from the seed. A folder that holds a
    /// run already (`last.ckpt`) is refused: resume it, or [`clear_run`] it first.
    pub fn new(cfg: TrainConfig, out: &Path, device: &Device, init: Option<Model>) -> Result<Self> {
        if out.join("last.ckpt").exists() {
            return Err(Error::Invalid(format!(
                "{}: holds a run already (last.ckpt); resume it, overwrite it, or choose another folder",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let device = device.clone().autodiff();
        let model = match init {
            Some(m) => trainable(m.to_device(&device)),
            None => {
                device.seed(cfg.seed);
                Model::new(&cfg.net, &device)
            }
        };
        let ema = (cfg.ema_decay > 0.0).then(|| Ema::new(&model, cfg.ema_decay));
        let sgd = Sgd::new(cfg.momentum, cfg.nesterov, cfg.weight_decay);
        let json = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&out.join("config.json"), json.as_bytes())?;
        Ok(Trainer {
            cfg,
            out: out.to_path_buf(),
            devices: vec![device.clone()],
            device,
            model,
            ema,
            sgd,
            state: TrainState::default(),
            engine: None,
            all_reduce: None,
            checkpoint_every: Some(CHECKPOINT_EVERY),
            last_checkpoint: Instant::now(),
        })
    }

    /// Continues the run whose `last.ckpt` is in `out`.
    pub fn resume(out: &Path, device: &Device) -> Result<Self> {
        let path = out.join("last.ckpt");
        if !path.exists() {
            return Err(Error::Invalid(format!(
                "{}: no checkpoint to resume from (start without --resume)",
                path.display()
            )));
        }
        let ck = checkpoint::load(&path)?;
        let device = device.clone().autodiff();
        let mismatch = |details: Vec<String>| Error::Mismatch {
            path: path.clone(),
            model: ck.config.model.clone(),
            details: details.join("; "),
        };
        // Two separate models: clones share BatchNorm running statistics (burn's RunningState).
        let fresh = || Model::new(&ck.config.net, &device.clone().inner());
        let model = apply_state_dict(fresh(), &ck.model, Form::Train).map_err(mismatch)?;
        let model = trainable(model.to_device(&device));
        let ema = match &ck.ema {
            Some(sd) => Some(Ema {
                // valid(): inference mode, or BatchNorm would normalize with batch statistics.
                model: apply_state_dict(fresh(), sd, Form::Train)
                    .map_err(mismatch)?
                    .valid(),
                decay: ck.config.ema_decay,
            }),
            None => None,
        };
        let mut sgd = Sgd::new(ck.config.momentum, ck.config.nesterov, ck.config.weight_decay);
        sgd.load_state(&ck.model, &ck.momentum, &device.clone().inner())
            .map_err(|m| Error::format(&path, m))?;
        Ok(Trainer {
            cfg: ck.config,
            out: out.to_path_buf(),
            devices: vec![device.clone()],
            device,
            model,
            ema,
            sgd,
            state: ck.state,
            engine: None,
            all_reduce: None,
            checkpoint_every: Some(CHECKPOINT_EVERY),
            last_checkpoint: Instant::now(),
        })
    }

    /// Splits every batch across these devices as well as the first (data parallelism over
    /// several GPUs); the model stays on the first.
    pub fn with_extra_devices(mut self, extra: &[Device]) -> Self {
        self.devices.extend(extra.iter().map(|d| d.clone().autodiff()));
        self
    }

    /// Data parallelism by burn's distributed all-reduce over `extra` GPUs and the first (one
    /// replica per GPU, gradients summed inside `backward()`; see [`super::ddp`]): CUDA GPUs
    /// with NCCL, refused otherwise. Every batch is split into one part per GPU, whatever
    /// `workers` says.
    pub fn with_all_reduce(mut self, extra: &[Device]) -> Result<Self> {
        let devices: Vec<Device> = std::iter::once(self.device.clone())
            .chain(extra.iter().cloned())
            .collect();
        let (model, all) = AllReduce::new(self.model, &self.sgd, &devices)?;
        self.model = model;
        self.all_reduce = Some(all);
        Ok(self)
    }

    /// Recovery checkpoints: `last.ckpt` is also written between two updates of an epoch once
    /// `every` has passed since the previous checkpoint, so that a process killed without a
    /// signal (SIGKILL, an out-of-memory kill, a power cut) loses at most `every` of training
    /// and resumes exactly. `None` writes it at epoch ends and on a stop request only;
    /// `Duration::ZERO`, after every update. The default is [`CHECKPOINT_EVERY`].
    pub fn with_checkpoint_every(mut self, every: Option<Duration>) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// Computes validation logits with `engine` instead of burn's forward pass (e.g.
    /// [`crate::engine::runtime_engine`], several times faster on the CPU).
    pub fn with_eval_engine(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    fn evaluate(&self, model: &Model, data: &Data, val: &[usize]) -> Result<Report> {
        match &self.engine {
            Some(make) => evaluate_with(&mut *make(model)?, data.val.clone(), val, &self.cfg.eval),
            None => evaluate(model, data.val.clone(), val, &self.cfg.eval),
        }
    }

    fn steps_per_epoch(&self, n_train: usize) -> usize {
        // Incomplete last batches are dropped (timm's training loader does the same).
        (n_train / self.cfg.batch_size).max(1)
    }

    fn schedule(&self, steps_per_epoch: usize) -> Schedule {
        let total = steps_per_epoch * self.cfg.epochs;
        Schedule {
            peak: self.cfg.lr,
            warmup_lr: self.cfg.warmup_lr,
            min_lr: self.cfg.min_lr,
            warmup_steps: warmup_steps(self.cfg.warmup_epochs, steps_per_epoch, total),
            total_steps: total,
        }
    }

    /// Trains until the configured epoch count, or until `stop` is set (then the state is
    /// saved to `last.ckpt` and the run can be resumed).
    pub fn run(&mut self, data: &Data, obs: &mut dyn Observer, stop: &AtomicBool) -> Result<Outcome> {
        let n_train = self
            .cfg
            .limit
            .map_or(data.train.len(), |l| l.min(data.train.len()));
        if n_train == 0 {
            return Err(Error::Invalid("the training split has no images".into()));
        }
        self.cfg.batch_size = self.cfg.batch_size.min(n_train);
        let steps = self.steps_per_epoch(n_train);
        let plan = Plan {
            n_train,
            steps,
            sched: self.schedule(steps),
            started: Instant::now(),
            elapsed_before: self.state.elapsed_s,
        };
        self.last_checkpoint = Instant::now();
        while self.state.epoch < self.cfg.epochs {
            let epoch = self.state.epoch;
            obs.epoch_start(epoch, self.cfg.epochs, steps, self.state.step_in_epoch);
            if !self.train_epoch(data, &plan, obs, stop)? {
                self.state.elapsed_s = plan.elapsed();
                self.save_checkpoint()?;
                return Ok(Outcome::Interrupted {
                    epoch,
                    global_step: self.state.global_step,
                });
            }
            obs.evaluating(epoch);
            let row = self.end_epoch(data, &plan)?;
            obs.epoch_end(&row, &self.state.history);
            if stop.load(Ordering::SeqCst) && self.state.epoch < self.cfg.epochs {
                return Ok(Outcome::Interrupted {
                    epoch: self.state.epoch,
                    global_step: self.state.global_step,
                });
            }
        }
        let summary = self.finish(data)?;
        Ok(Outcome::Finished(Box::new(Summary {
            seconds: plan.elapsed(),
            ..summary
        })))
    }

    /// The rest of the current epoch's updates; `false` when `stop` was set before its end.
    fn train_epoch(
        &mut self,
        data: &Data,
        plan: &Plan,
        obs: &mut dyn Observer,
        stop: &AtomicBool,
    ) -> Result<bool> {
        let epoch = self.state.epoch;
        let bs = self.cfg.batch_size;
        let mut order: Vec<usize> = (0..plan.n_train).collect();
        Rng::keyed(&[self.cfg.seed, epoch as u64, 0x0DE7]).shuffle(&mut order);
        order.truncate(plan.steps * bs);
        let skip = self.state.step_in_epoch * bs;
        let aug = self.cfg.augment.clone();
        let seed = self.cfg.seed;
        let f = move |pos: usize, img: &repghost_data::Image| {
            aug.apply(img, &mut Rng::keyed(&[seed, epoch as u64, (skip + pos) as u64]))
        };
        let [c, s] = [self.cfg.augment.pre.channels, self.cfg.augment.pre.img_size];
        let rx = batches_with(
            data.train.clone(),
            order[skip..].to_vec(),
            [c, s],
            Arc::new(f),
            bs,
            4,
        );
        let mut t0 = Instant::now();
        for batch in rx {
            if let Some((name, msg)) = batch.failed.first() {
                return Err(Error::Data {
                    name: name.clone(),
                    msg: msg.clone(),
                });
            }
            let lr = plan.sched.lr(self.state.global_step);
            let loss = self.step(&batch, lr, plan.sched.total_steps)?;
            let n = batch.labels.len();
            self.state.global_step += 1;
            self.state.step_in_epoch += 1;
            self.state.epoch_loss_sum += loss as f64 * n as f64;
            self.state.epoch_images += n;
            self.state.epoch_train_s += t0.elapsed().as_secs_f64();
            t0 = Instant::now();
            obs.step(&StepInfo {
                epoch,
                epochs: self.cfg.epochs,
                step: self.state.step_in_epoch,
                steps: plan.steps,
                loss: loss as f64,
                lr,
                images_per_s: self.state.epoch_images as f64 / self.state.epoch_train_s.max(1e-9),
            });
            if self.state.step_in_epoch < plan.steps {
                if stop.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                if self
                    .checkpoint_every
                    .is_some_and(|every| self.last_checkpoint.elapsed() >= every)
                {
                    self.state.elapsed_s = plan.elapsed();
                    self.save_checkpoint()?;
                }
            }
        }
        Ok(true)
    }

    /// One SGD update on `batch` and the EMA after it; the batch's mean loss.
    fn step(&mut self, batch: &Batch, lr: f64, total_steps: usize) -> Result<f32> {
        let epoch = self.state.epoch;
        let step = self.state.global_step;
        let bs = self.cfg.batch_size;
        let keep = self.dropout_mask(epoch, self.state.step_in_epoch * bs, &batch.indices);
        let sb = StepBatch {
            inputs: &batch.inputs,
            shape: batch.shape,
            labels: &batch.labels,
            keep: keep.as_ref().map(|k| (k.as_slice(), HEAD_CHANNELS)),
        };
        let (value, grads) = match &self.all_reduce {
            Some(all) => all.gradients(&self.model, &sb, self.cfg.label_smoothing)?,
            None => {
                let (value, grads) = gradients(
                    &self.model,
                    &sb,
                    self.cfg.workers,
                    self.cfg.label_smoothing,
                    &self.devices,
                );
                (value, vec![grads])
            }
        };
        if !value.is_finite() {
            return Err(Error::Diverged {
                value,
                epoch,
                step: self.state.step_in_epoch,
                global_step: step,
            });
        }
        let mut grads = grads.into_iter();
        let own = grads.next().expect("replica 0's gradients");
        self.model = self.sgd.step(self.model.clone(), own, lr);
        if let Some(all) = &mut self.all_reduce {
            all.update(grads, lr);
        }
        // Merges the BatchNorm statistics the workers computed (burn keeps them per thread
        // until a sync) and gives the EMA plain tensors.
        let synced = self.model.valid();
        if let Some(ema) = &mut self.ema {
            ema.update(&synced, step, total_steps);
        }
        Ok(value)
    }

    /// Evaluates model and EMA, keeps the best weights, and writes `metrics.csv` and
    /// `last.ckpt`; the epoch's row.
    fn end_epoch(&mut self, data: &Data, plan: &Plan) -> Result<EpochRow> {
        let epoch = self.state.epoch;
        let val = self.val_indices(data);
        let report = self.evaluate(&self.model.valid(), data, &val)?;
        let ema_report = match &self.ema {
            Some(e) => Some(self.evaluate(&e.model, data, &val)?),
            None => None,
        };
        let row = EpochRow {
            epoch: epoch + 1,
            lr: plan.sched.lr(self.state.global_step.saturating_sub(1)),
            train_loss: self.state.epoch_loss_sum / self.state.epoch_images.max(1) as f64,
            top1: report.top1,
            top5: report.top5,
            ema_top1: ema_report.as_ref().map(|r| r.top1),
            ema_top5: ema_report.as_ref().map(|r| r.top5),
            images_per_s: self.state.epoch_images as f64 / self.state.epoch_train_s.max(1e-9),
            wall_s: plan.elapsed(),
        };
        let (best_model, best_top1) = match &self.ema {
            Some(e) if row.ema_top1.unwrap_or(0.0) > row.top1 => {
                (e.model.clone(), row.ema_top1.unwrap_or(0.0))
            }
            _ => (self.model.valid(), row.top1),
        };
        if best_top1 > self.state.best_top1 || self.state.history.is_empty() {
            self.state.best_top1 = best_top1;
            self.state.best_epoch = epoch + 1;
            self.save_weights(&best_model, Form::Train, "best.safetensors")?;
        }
        self.state.history.push(row.clone());
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        self.state.epoch_loss_sum = 0.0;
        self.state.epoch_images = 0;
        self.state.epoch_train_s = 0.0;
        self.state.elapsed_s = plan.elapsed();
        write_atomic(
            &self.out.join("metrics.csv"),
            metrics_csv(&self.state.history).as_bytes(),
        )?;
        self.save_checkpoint()?;
        Ok(row)
    }

    /// Dropout keep-mask for the samples at `pos..` of this epoch's order: a function of
    /// (seed, epoch, position) only, so resumed and multi-worker runs draw the same masks.
    fn dropout_mask(&self, epoch: usize, pos: usize, indices: &[usize]) -> Option<Vec<f32>> {
        let p = self.cfg.net.dropout;
        if p <= 0.0 {
            return None;
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        let mut keep = Vec::with_capacity(indices.len() * HEAD_CHANNELS);
        for i in 0..indices.len() {
            let mut rng = Rng::keyed(&[self.cfg.seed, epoch as u64, (pos + i) as u64, 0xD80]);
            keep.extend((0..HEAD_CHANNELS).map(|_| if rng.chance(p) { 0.0 } else { scale }));
        }
        Some(keep)
    }

    fn val_indices(&self, data: &Data) -> Vec<usize> {
        let n = self
            .cfg
            .val_limit
            .map_or(data.val.len(), |l| l.min(data.val.len()));
        (0..n).collect()
    }

    /// Native weights in `out`, with the model name and the evaluation preprocessing.
    fn save_weights(&self, model: &Model, form: Form, file: &str) -> Result<()> {
        save(
            model,
            &self.cfg.model,
            form,
            Some(&self.cfg.eval),
            Storage::F32,
            &self.out.join(file),
        )
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        let ck = Checkpoint {
            model: state_dict(&self.model.valid(), Form::Train),
            ema: self.ema.as_ref().map(|e| state_dict(&e.model, Form::Train)),
            momentum: self.sgd.state(),
            state: self.state.clone(),
            config: self.cfg.clone(),
        };
        checkpoint::save(&self.out.join("last.ckpt"), &ck)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// The model to deploy (the EMA if there is one), re-parameterized, checked against its
    /// train form on validation images, and written to `deploy.safetensors`.
    fn finish(&self, data: &Data) -> Result<Summary> {
        let train = match &self.ema {
            Some(e) => e.model.clone(),
            None => self.model.valid(),
        };
        let deploy = train.clone().reparameterize();
        let val = self.val_indices(data);
        let probe: Vec<usize> = val.iter().copied().take(16).collect();
        let mut rel = 0.0f64;
        for batch in batches(data.val.clone(), probe, self.cfg.eval.clone(), 16, 1) {
            let x = Tensor::<4>::from_data(
                TensorData::new(batch.inputs, batch.shape),
                &self.device.clone().inner(),
            );
            let e = crate::reparam::folding_error(&train, &deploy, x)?;
            rel = if e.is_nan() { e } else { rel.max(e) };
        }
        if rel.is_nan() || rel >= 1e-3 {
            return Err(Error::Invalid(format!(
                "re-parameterized model disagrees with its train form (relative difference {rel:.2e})"
            )));
        }
        self.save_weights(&deploy, Form::Deploy, "deploy.safetensors")?;
        let deploy_report = self.evaluate(&deploy, data, &val)?;
        Ok(Summary {
            history: self.state.history.clone(),
            deploy_report,
            reparam_rel_diff: rel,
            seconds: 0.0,
        })
    }

    /// The model being trained, in inference form.
    pub fn model(&self) -> Model {
        self.model.valid()
    }

    pub fn ema_model(&self) -> Option<Model> {
        self.ema.as_ref().map(|e| e.model.clone())
    }
}

/// Lifts a model with plain tensors (loaded weights) onto autodiff, every parameter
/// trainable (running statistics stay buffers: `RunningState` drops the flag).
fn trainable(model: Model) -> Model {
    struct T;
    impl ModuleMapper for T {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.autodiff().require_grad())
        }
    }
    model.map(&mut T)
}
