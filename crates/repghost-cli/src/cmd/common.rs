//! Options shared by the commands that run a model: weights, device, preprocessing.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::{Tensor, TensorData};
use repghost::weights::{self, LoadOptions, Loaded};
use repghost::Model;
use repghost_data::{Interpolation, Preprocess};

use std::cell::RefCell;

use repghost::weights::safetensors_io::{self, Meta};
use repghost::weights::{state_dict, Form};
use repghost_runtime::{Layout, Workspace};

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
    /// re-parameterized in memory first) or burn. `auto`: the runtime on the CPU, burn on a GPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineArg,
    /// CPU threads for the runtime engine.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum EngineArg {
    Auto,
    Runtime,
    Burn,
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

/// A runtime workspace and the input shape it was planned for.
type Cached = ([usize; 4], Workspace);

pub struct Runner {
    pub loaded: Loaded,
    pub model: Model,
    pub device: burn::tensor::Device,
    /// The runtime engine, when it computes.
    runtime: Option<RefCell<RuntimeLogits>>,
}

/// The deploy runtime running one model, with the workspace of the last input shape.
pub struct RuntimeLogits {
    rt: repghost_runtime::Model,
    cache: Option<Cached>,
    threads: usize,
}

impl RuntimeLogits {
    /// The runtime for an inference-form model; train-form weights are folded here first.
    pub fn new(
        model: &Model,
        form: Form,
        name: &str,
        preprocess: Option<Preprocess>,
        threads: usize,
    ) -> Result<Self> {
        let deploy = if form == Form::Deploy {
            model.clone()
        } else {
            model.clone().reparameterize()
        };
        let meta = Meta {
            model: name.to_string(),
            config: deploy.config().clone(),
            form: Form::Deploy,
            preprocess,
        };
        let bytes = safetensors_io::to_bytes(&state_dict(&deploy, Form::Deploy), &meta)?;
        Ok(RuntimeLogits {
            rt: repghost_runtime::Model::from_bytes(&bytes)?,
            cache: None,
            threads: threads.max(1),
        })
    }

    /// Logits `[n, classes]` of an `[n, c, h, w]` batch.
    pub fn logits(&mut self, inputs: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        if self.cache.as_ref().map(|(s, _)| *s) != Some(shape) {
            let ws = self
                .rt
                .workspace_threads(shape[0], shape[2], shape[3], self.threads)?;
            self.cache = Some((shape, ws));
        }
        let (_, ws) = self.cache.as_mut().expect("just set");
        Ok(self.rt.run(ws, inputs, Layout::Nchw)?.to_vec())
    }
}

impl repghost::train::Logits for RuntimeLogits {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> repghost::Result<Vec<f32>> {
        RuntimeLogits::logits(self, &inputs, shape)
            .map_err(|e| repghost::Error::Invalid(format!("runtime: {e:#}")))
    }
}

pub fn load(args: &ModelArgs) -> Result<Runner> {
    if args.batch_size == 0 {
        return Err(crate::usage!("--batch-size must be at least 1"));
    }
    let device = device(args.device)?;
    let loaded = args.src.load(&device)?;
    let model = loaded.model.valid();
    let use_runtime = match args.engine {
        EngineArg::Runtime => true,
        EngineArg::Burn => false,
        EngineArg::Auto => matches!(args.device, DeviceArg::Cpu),
    };
    let runtime = if use_runtime {
        let rt = RuntimeLogits::new(
            &model,
            loaded.form,
            &loaded.name,
            loaded.preprocess.clone(),
            args.threads,
        )?;
        Some(RefCell::new(rt))
    } else {
        None
    };
    Ok(Runner {
        loaded,
        model,
        device,
        runtime,
    })
}

impl Runner {
    /// "runtime" or "burn".
    pub fn engine_name(&self) -> &'static str {
        if self.runtime.is_some() {
            "runtime"
        } else {
            "burn"
        }
    }

    /// The weights' preprocessing (or ImageNet's, adapted to the input channels), with overrides.
    pub fn preprocess(&self, o: &PreprocessArgs) -> Result<Preprocess> {
        let channels = self.model.config().in_chans;
        let mut p = self.loaded.preprocess.clone().unwrap_or_else(|| {
            let mut p = Preprocess::imagenet();
            if channels == 1 {
                // timm's convention for one-channel models: the mean of the means and stds.
                p.mean = vec![0.449];
                p.std = vec![0.226];
                p.channels = 1;
            }
            p
        });
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
    pub fn logits(&self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>> {
        if let Some(rt) = &self.runtime {
            return rt.borrow_mut().logits(&inputs, shape);
        }
        let x = Tensor::<4>::from_data(TensorData::new(inputs, shape), &self.device);
        let y = self.model.forward(x).into_data().convert::<f32>();
        y.try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))
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
