//! `repghost train`: the paper's recipe on an ImageFolder or Fashion-MNIST, with a progress
//! bar, per-epoch metrics, curves, resumable checkpoints, and deploy weights at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use repghost::engine::runtime_engine;
use repghost::threads::Threads;
use repghost::train::start::{check_new_run, load_init};
use repghost::train::{
    clear_run, Data, DataShape, EpochRow, Observer, Outcome, Preset, StepInfo, Summary, TrainConfig, Trainer,
};
use repghost::variants::resolve;
use repghost_data::dataset::Dataset;
use repghost_data::idx::Split;
use repghost_data::Crop;

use super::common::EngineArg;
use super::train_plot::plot_curves;
use crate::device::{devices, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Model to train (any RepGhostNet width, ablation or GhostNet); default repghostnet_050,
    /// or the model of the --init weights.
    #[arg(long)]
    pub model: Option<String>,
    /// An ImageFolder directory with train/ and val/ (or test/) sub-folders, `fashion-mnist`
    /// (Debian package dataset-fashion-mnist), or a folder holding the Fashion-MNIST IDX files.
    #[arg(long)]
    pub data: String,
    /// Output directory: config.json, metrics.csv, curves.png, last.ckpt, best.safetensors,
    /// deploy.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last.ckpt (its config.json is used; other flags
    /// except --data, --device, --threads and --eval-engine are ignored).
    #[arg(long)]
    pub resume: bool,
    /// Start a new run in an --out that holds one: its files (config.json, metrics.csv,
    /// curves.png, last.ckpt, best.safetensors, deploy.safetensors) are replaced; nothing
    /// else in the folder is touched. Without it such a folder is refused.
    #[arg(long)]
    pub overwrite: bool,
    /// Start from these weights (train form: a native, official or timm checkpoint); the
    /// classifier is replaced when the class count differs (fine-tuning).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Settings for the data: `imagenet` (the official recipe: RandomResizedCrop, flip,
    /// colour jitter, random erasing, 224²), `small` (grey images of ≤ 64 px such as
    /// Fashion-MNIST: native size, stride-1 stem, ±2 px shifts, flip, random erasing), or
    /// `auto` (small for Fashion-MNIST/IDX data and small grey images, else imagenet).
    #[arg(long, value_enum, default_value = "auto")]
    pub preset: PresetArg,
    /// Epochs (default: 300 for imagenet as in the paper, 30 for small).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per update (the global batch; split across --workers or --devices).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate (default: the paper's 0.6 per 1024 images, scaled linearly to the
    /// batch size; small preset: 0.2 per 128).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up length in epochs (capped at a tenth of the run).
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Learning rate at the start of the warm-up.
    #[arg(long, default_value_t = 1e-4)]
    pub warmup_lr: f64,
    /// Floor of the cosine decay.
    #[arg(long, default_value_t = 1e-5)]
    pub min_lr: f64,
    /// SGD momentum factor.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Plain momentum instead of Nesterov's.
    #[arg(long)]
    pub no_nesterov: bool,
    /// L2 on conv and linear weights (default: 1e-5 as in the paper; small preset 5e-5).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Label smoothing (0 disables).
    #[arg(long, default_value_t = 0.1)]
    pub smoothing: f64,
    /// Dropout before the classifier.
    #[arg(long, default_value_t = 0.2)]
    pub dropout: f64,
    /// Model EMA decay before the short-run adjustment (0 disables the EMA).
    #[arg(long, default_value_t = 0.9999)]
    pub ema_decay: f64,
    /// Input side (default: 224 for imagenet, the images' own size for small).
    #[arg(long)]
    pub img_size: Option<usize>,
    /// RandomResizedCrop area range (imagenet preset).
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [0.08, 1.0])]
    pub scale: Vec<f64>,
    /// Maximum shift in pixels (small preset).
    #[arg(long, default_value_t = 2)]
    pub shift: usize,
    /// Horizontal flip probability.
    #[arg(long, default_value_t = 0.5)]
    pub hflip: f64,
    /// Colour jitter strength (default 0.4 for imagenet, 0 for small grey images).
    #[arg(long)]
    pub color_jitter: Option<f32>,
    /// Random-erasing probability (pixel mode).
    #[arg(long, default_value_t = 0.2)]
    pub erase: f64,
    /// Seed of initialisation, data order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on the first N training images only (smoke runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on the first N validation images only.
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Data-parallel training over N devices of --device's kind, every batch split into one
    /// part per device. cuda: GPUs 0..N, one replica each, gradients summed by burn's
    /// all-reduce (NCCL) inside the backward pass. wgpu: the first N adapters (N replicas of
    /// the first where fewer are found), gradients gathered and summed on the first. cpu: the
    /// same as --workers N.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// CPU threads that compute: burn's CPU backend, the data loader and the runtime's
    /// validation [default: every core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// What computes the validation logits after every epoch: the deploy runtime (model and
    /// EMA re-parameterized in memory, the same function as their train form to ~1e-6) or
    /// burn's forward pass of the train form. `auto`: the runtime on the CPU, burn on a GPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub eval_engine: EngineArg,
    /// Threads that each compute the gradients of a part of every batch (CPU data
    /// parallelism; as in DDP, BatchNorm uses per-part statistics). burn's CPU backend
    /// parallelizes inside each operation; where that leaves cores idle, more workers fill
    /// them (1.6× with 4 workers on a 2-core AVX2 EPYC, no gain on an AVX-512 one):
    /// measure with `repghost bench --engine train-step --workers 1 4`.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Minutes between recovery checkpoints: `last.ckpt` is also written in the middle of an
    /// epoch once this long has passed since the previous one, so that a process killed
    /// without a signal (SIGKILL, out of memory, power loss) loses at most this much training
    /// and `--resume` continues exactly. 0: at epoch ends only. Applies to resumed runs too.
    #[arg(long, default_value_t = 10.0, value_name = "MINUTES")]
    pub checkpoint_every: f64,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Debug)]
pub enum PresetArg {
    Auto,
    Imagenet,
    Small,
}

pub fn run(args: Args) -> Result<()> {
    match execute(&args)? {
        Some(_) => Ok(()),
        // Interrupted: the checkpoint is saved; 130 is the shell's code for Ctrl-C.
        None => std::process::exit(130),
    }
}

/// Trains as the flags say; `None` when interrupted (after saving `last.ckpt`).
pub fn execute(args: &Args) -> Result<Option<(Trainer, Box<Summary>)>> {
    // Command-line mistakes first, before any data is read.
    if let Some(m) = &args.model {
        resolve(m)?;
    }
    if args.batch_size == 0 || args.epochs == Some(0) || args.devices == 0 || args.workers == 0 {
        return Err(crate::usage!(
            "--batch-size, --epochs, --devices and --workers must be at least 1"
        ));
    }
    if args.scale.len() != 2
        || !(0.0 < args.scale[0] && args.scale[0] <= args.scale[1] && args.scale[1] <= 1.0)
    {
        return Err(crate::usage!("--scale takes MIN MAX with 0 < MIN ≤ MAX ≤ 1"));
    }
    if !(args.checkpoint_every.is_finite() && args.checkpoint_every >= 0.0) {
        return Err(crate::usage!("--checkpoint-every takes minutes, 0 or more"));
    }
    if args.resume && args.overwrite {
        return Err(crate::usage!("--resume and --overwrite exclude each other"));
    }
    let threads = Threads::or_all(args.threads)?;
    threads.install()?;
    let all = devices(args.device, args.devices)?;
    // burn's all-reduce exists on CUDA only; checked before any file is written.
    let all_reduce = matches!(args.device, DeviceArg::Cuda) && all.len() > 1;
    if all_reduce {
        repghost::train::ddp::check(&all)?;
    }
    let data = open_data(&args.data)?;
    let trainer = if args.resume {
        let t = Trainer::resume(&args.out, &all[0])?;
        eprintln!(
            "resuming {} in {} after {} epoch(s) and {} update(s)",
            t.cfg.model,
            args.out.display(),
            t.state.epoch,
            t.state.global_step
        );
        t
    } else {
        check_new_run(&args.out, args.overwrite)?;
        let (cfg, init) = config(args, &*data.train)?;
        if args.overwrite {
            clear_run(&args.out)?;
        }
        Trainer::new(cfg, &args.out, &all[0], init)?
    };
    let trainer = if all_reduce {
        trainer.with_all_reduce(&all[1..])?
    } else {
        trainer.with_extra_devices(&all[1..])
    };
    let trainer = trainer.with_checkpoint_every(
        (args.checkpoint_every > 0.0).then(|| Duration::from_secs_f64(60.0 * args.checkpoint_every)),
    );
    let runtime_eval = args.eval_engine.uses_runtime(args.device);
    fit(trainer, &data, &args.out, threads, runtime_eval)
}

/// The training and validation splits named by `--data`.
pub fn open_data(data: &str) -> Result<Data> {
    let train = repghost_data::open(data, Split::Train).with_context(|| "training split")?;
    let val = repghost_data::open(data, Split::Test).with_context(|| "validation split")?;
    if train.is_empty() {
        bail!("{data}: the training split has no images");
    }
    Ok(Data { train, val })
}

/// Runs `trainer` with a progress display, Ctrl-C/SIGTERM saving a checkpoint, and the
/// validation on the deploy runtime when `runtime_eval`; `None` when interrupted.
pub fn fit(
    trainer: Trainer,
    data: &Data,
    out: &Path,
    threads: Threads,
    runtime_eval: bool,
) -> Result<Option<(Trainer, Box<Summary>)>> {
    let mut trainer = trainer;
    if runtime_eval {
        let engine = runtime_engine(&trainer.cfg.model, threads.get());
        trainer = trainer.with_eval_engine(engine);
    }
    let classes = data.train.classes();
    if classes.len() > trainer.cfg.net.num_classes {
        bail!(
            "{}: {} classes but the model has {} outputs",
            trainer.cfg.data,
            classes.len(),
            trainer.cfg.net.num_classes
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: the user insists; the last checkpoint is intact.
                eprintln!("\ninterrupted again: exiting without a new checkpoint");
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit now)");
        })
        // With ctrlc's `termination` feature this also catches SIGTERM and SIGHUP, which
        // schedulers, `kill` and a closed terminal send: they save the checkpoint as Ctrl-C does.
        .context("installing the Ctrl-C handler")?;
    }

    let mut obs = Progress::new(out.to_path_buf());
    let cfg = &trainer.cfg;
    let (n_train, n_val) = (data.train.len(), data.val.len());
    eprintln!(
        "training {} on {} ({} train / {} val images{}), {} epochs, batch {}, lr {:.4}, {}×{} input, {} channel(s)",
        cfg.model,
        cfg.data,
        cfg.limit.map_or(n_train, |l| l.min(n_train)),
        cfg.val_limit.map_or(n_val, |l| l.min(n_val)),
        if cfg.limit.is_some() { ", limited" } else { "" },
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.augment.pre.img_size,
        cfg.augment.pre.img_size,
        cfg.net.in_chans
    );
    match trainer.run(data, &mut obs, &stop)? {
        Outcome::Interrupted { epoch, global_step } => {
            eprintln!(
                "stopped after {global_step} update(s) (epoch {}); resume with: repghost train --resume --data {} --out {}",
                epoch + 1,
                trainer.cfg.data,
                out.display()
            );
            Ok(None)
        }
        Outcome::Finished(s) => {
            println!(
                "finished in {:.0} s: best val top-1 {:.2}% (epoch {}); deploy.safetensors: top-1 {:.2}%, top-5 {:.2}%; re-parameterization agrees to {:.1e}",
                s.seconds,
                100.0 * trainer.state.best_top1,
                trainer.state.best_epoch,
                100.0 * s.deploy_report.top1,
                100.0 * s.deploy_report.top5,
                s.reparam_rel_diff
            );
            if let Some(r) = s.history.last() {
                println!(
                    "last epoch: model {:.2}%{}",
                    100.0 * r.top1,
                    r.ema_top1
                        .map(|e| format!(", EMA {:.2}%", 100.0 * e))
                        .unwrap_or_default()
                );
            }
            Ok(Some((trainer, s)))
        }
    }
}

/// The run's configuration: the preset for the data, then every flag the user gave.
fn config(args: &Args, ds: &dyn Dataset) -> Result<(TrainConfig, Option<repghost::Model>)> {
    let (mut name, variant) = resolve(args.model.as_deref().unwrap_or("repghostnet_050"))?;
    let shape = DataShape::first_of(ds)?;
    let preset = match args.preset {
        PresetArg::Small => Preset::Small,
        PresetArg::Imagenet => Preset::Imagenet,
        PresetArg::Auto => Preset::detect(shape),
    };
    let classes = ds.classes().len().max(2);
    let mut net = variant.config(classes);
    let init = match &args.init {
        Some(p) => {
            let (n, m) = load_init(p, args.model.as_deref(), classes)?;
            net = m.config().clone();
            name = n;
            Some(m)
        }
        None => None,
    };
    let mut cfg = TrainConfig::preset(
        preset,
        &name,
        net,
        init.is_none(),
        &args.data,
        shape,
        args.batch_size,
    );
    if let Some(side) = args.img_size {
        cfg = cfg.with_img_size(side);
    }
    cfg.eval.check().map_err(anyhow::Error::msg)?;
    cfg.net = cfg.net.with_dropout(args.dropout);
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.lr {
        cfg.lr = v;
    }
    if let Some(v) = args.warmup_epochs {
        cfg.warmup_epochs = v;
    }
    if let Some(v) = args.weight_decay {
        cfg.weight_decay = v;
    }
    if let Some(v) = args.color_jitter {
        cfg.augment.color_jitter = v;
    }
    match &mut cfg.augment.crop {
        Crop::Shift { pad } => *pad = args.shift,
        Crop::RandomResized { scale, .. } => *scale = (args.scale[0], args.scale[1]),
        _ => {}
    }
    cfg.warmup_lr = args.warmup_lr;
    cfg.min_lr = args.min_lr;
    cfg.momentum = args.momentum;
    cfg.nesterov = !args.no_nesterov;
    cfg.label_smoothing = args.smoothing;
    cfg.ema_decay = args.ema_decay;
    cfg.augment.hflip = args.hflip;
    cfg.augment.erase_p = args.erase;
    cfg.seed = args.seed;
    cfg.limit = args.limit;
    cfg.val_limit = args.val_limit;
    cfg.init = args.init.as_ref().map(|p| p.display().to_string());
    cfg.workers = args.workers;
    Ok((cfg, init))
}

/// Progress bar per epoch on a terminal, log lines otherwise; curves.png after each epoch.
struct Progress {
    out: PathBuf,
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
    next_log: usize,
}

impl Progress {
    fn new(out: PathBuf) -> Self {
        Progress {
            out,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            next_log: 0,
        }
    }
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize, done: usize) {
        self.next_log = done + steps.div_ceil(10);
        if self.tty {
            let b = indicatif::ProgressBar::new(steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            b.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
            b.set_position(done as u64);
            self.bar = Some(b);
        }
    }

    fn step(&mut self, s: &StepInfo) {
        let msg = format!("loss {:.4} lr {:.2e} {:.0} img/s", s.loss, s.lr, s.images_per_s);
        if let Some(b) = &self.bar {
            b.set_position(s.step as u64);
            b.set_message(msg);
        } else if s.step >= self.next_log || s.step == s.steps {
            eprintln!(
                "epoch {}/{} step {}/{}: {msg}",
                s.epoch + 1,
                s.epochs,
                s.step,
                s.steps
            );
            self.next_log = s.step + s.steps.div_ceil(10);
        }
    }

    fn evaluating(&mut self, _epoch: usize) {
        if let Some(b) = &self.bar {
            b.set_message("evaluating");
        }
    }

    fn epoch_end(&mut self, r: &EpochRow, history: &[EpochRow]) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!(
            "epoch {}: train loss {:.4}, val top-1 {:.2}% top-5 {:.2}%{}, {:.0} img/s, {:.0} s",
            r.epoch,
            r.train_loss,
            100.0 * r.top1,
            100.0 * r.top5,
            r.ema_top1
                .map(|e| format!(" (EMA {:.2}%)", 100.0 * e))
                .unwrap_or_default(),
            r.images_per_s,
            r.wall_s
        );
        if let Err(e) = plot_curves(history, &self.out.join("curves.png")) {
            eprintln!("warning: curves.png not written: {e:#}");
        }
    }
}
