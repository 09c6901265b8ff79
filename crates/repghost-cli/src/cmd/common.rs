//! Options shared by the commands that run a model: weights, device, preprocessing.

use std::path::PathBuf;

use anyhow::{bail, Result};
use repghost::threads::Threads;
use repghost::weights::{self, LoadOptions, Loaded};
use repghost::Model;
use repghost_data::{Interpolation, Preprocess};

use repghost::engine::{BurnLogits, EngineKind, Logits, RuntimeLogits};

use crate::device::{device, DeviceArg};

/// Which weights to read; shared by every command that loads a model.
#[derive(clap::Args)]
pub struct WeightsArgs {
    /// Weights in any supported form: an official .pth/.pth.tar (training checkpoint or
    /// convert.py output), a timm .pth/.safetensors, or a native .safetensors (train or deploy).
    #[arg(long)]
    pub weights: PathBuf,
    /// Model name; needed only when the file's metadata and tensor shapes do not decide it.
    #[arg(long)]
    pub model: Option<String>,
    /// Use the EMA weights (`state_dict_ema`) of a training checkpoint.
    #[arg(long)]
    pub ema: bool,
}

impl WeightsArgs {
    pub fn load(&self, device: &burn::tensor::Device) -> Result<Loaded> {
        let opts = LoadOptions {
            model: self.model.clone(),
            ema: self.ema,
        };
        Ok(weights::load(&self.weights, &opts, device)?)
    }
}

#[derive(clap::Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub src: WeightsArgs,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Which engine computes: our CPU runtime (the deploy graph; train-form weights are
    /// re-parameterized in memory first; an INT8 file runs its INT8 kernels) or burn (an INT8
    /// file's weights dequantized to float). `auto`: the runtime on the CPU, burn on a GPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineArg,
    /// CPU threads that compute, whichever engine: the runtime's (a batch is split between
    /// them; a single image uses two) or burn's CPU backend [default: every core].
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum EngineArg {
    Auto,
    Runtime,
    Burn,
}

impl EngineArg {
    /// Whether the runtime computes for a model on `device`.
    pub fn uses_runtime(self, device: DeviceArg) -> bool {
        let kind = match self {
            EngineArg::Auto => EngineKind::Auto,
            EngineArg::Runtime => EngineKind::Runtime,
            EngineArg::Burn => EngineKind::Burn,
        };
        kind.uses_runtime(matches!(device, DeviceArg::Cpu))
    }
}

/// Overrides of the preprocessing recorded in the weights (ImageNet's by default:
/// resize shorter side to floor(224 / 0.875) = 256 bicubic, centre-crop 224, ImageNet mean/std).
#[derive(clap::Args, Default)]
pub struct PreprocessArgs {
    /// Side of the centre crop the model sees.
    #[arg(long)]
    pub img_size: Option<usize>,
    /// Fraction of the resized image kept by the crop (resize to floor(img_size / crop_pct)).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// Resampling filter of the resize (Pillow-exact).
    #[arg(long, value_enum)]
    pub interpolation: Option<InterpArg>,
    /// Per-channel mean, comma-separated (e.g. 0.485,0.456,0.406).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std, comma-separated (e.g. 0.229,0.224,0.225).
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InterpArg {
    Bicubic,
    Bilinear,
    Nearest,
}

pub struct Runner {
    pub loaded: Loaded,
    pub model: Model,
    /// The runtime or burn.
    engine: Box<dyn Logits>,
    uses_runtime: bool,
}

pub fn load(args: &ModelArgs) -> Result<Runner> {
    if args.batch_size == 0 {
        return Err(crate::usage!("--batch-size must be at least 1"));
    }
    let device = device(args.device)?;
    let loaded = args.src.load(&device)?;
    let model = loaded.model.valid();
    let uses_runtime = args.engine.uses_runtime(args.device);
    let threads = Threads::or_all(args.threads)?;
    threads.install()?;
    let engine: Box<dyn Logits> = if uses_runtime && loaded.int8 {
        let rt = repghost_runtime::Model::load(&args.src.weights)?;
        Box::new(RuntimeLogits::from_runtime(rt, threads.get()))
    } else if uses_runtime {
        let rt = RuntimeLogits::new(&model, loaded.form, &loaded.name, threads.get())?;
        Box::new(rt)
    } else {
        Box::new(BurnLogits::new(&model))
    };
    Ok(Runner {
        loaded,
        model,
        engine,
        uses_runtime,
    })
}

impl Runner {
    /// "runtime" or "burn".
    pub fn engine_name(&self) -> &'static str {
        if self.uses_runtime {
            "runtime"
        } else {
            "burn"
        }
    }

    /// The weights' preprocessing (or ImageNet's, adapted to the input channels), with overrides.
    pub fn preprocess(&self, o: &PreprocessArgs) -> Result<Preprocess> {
        let channels = self.model.config().in_chans;
        let mut p = self
            .loaded
            .preprocess
            .clone()
            .unwrap_or_else(|| Preprocess::imagenet_for(channels));
        if let Some(v) = o.img_size {
            p.img_size = v;
        }
        if let Some(v) = o.crop_pct {
            p.crop_pct = v;
        }
        if let Some(v) = o.interpolation {
            p.interpolation = match v {
                InterpArg::Bicubic => Interpolation::Bicubic,
                InterpArg::Bilinear => Interpolation::Bilinear,
                InterpArg::Nearest => Interpolation::Nearest,
            };
        }
        if let Some(v) = &o.mean {
            p.mean = v.clone();
        }
        if let Some(v) = &o.std {
            p.std = v.clone();
        }
        if p.channels != channels {
            bail!(
                "the model takes {channels} input channels but the preprocessing makes {}",
                p.channels
            );
        }
        p.check().map_err(anyhow::Error::msg)?;
        Ok(p)
    }

    /// Logits `[n, classes]` of an `[n, c, h, w]` batch.
    pub fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> repghost::Result<Vec<f32>> {
        self.engine.logits(inputs, shape)
    }

    /// Class names: `--labels`, else ImageNet's for 1000 classes, else indices.
    pub fn class_names(&self, labels: Option<&PathBuf>) -> Result<Vec<String>> {
        let n = self.model.config().num_classes;
        match labels {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                let l: Vec<String> = text.lines().map(str::to_string).collect();
                if l.len() != n {
                    bail!("{}: {} labels for a model with {n} classes", p.display(), l.len());
                }
                Ok(l)
            }
            None if n == 1000 => Ok(repghost_data::labels::imagenet()),
            None => Ok((0..n).map(|i| i.to_string()).collect()),
        }
    }
}

impl Logits for Runner {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> repghost::Result<Vec<f32>> {
        Runner::logits(self, inputs, shape)
    }
}
