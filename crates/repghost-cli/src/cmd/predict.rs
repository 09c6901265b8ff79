//! `repghost predict`: logits and top-K for a preprocessed batch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::{Tensor, TensorData};
use repghost::npy;
use repghost::weights::{self, LoadOptions};

use crate::device::{device, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Weights in any supported form (train, official fused, deploy; native, official or timm).
    #[arg(long)]
    weights: PathBuf,
    /// Model name; needed only when the file's metadata and tensor shapes do not decide it.
    #[arg(long)]
    model: Option<String>,
    /// Use the EMA weights (`state_dict_ema`) of a training checkpoint.
    #[arg(long)]
    ema: bool,
    /// Preprocessed input: float32/float64 .npy of shape [N, C, H, W] (NCHW, normalized).
    #[arg(long)]
    input: PathBuf,
    /// Write the raw logits [N, classes] here as float32 .npy.
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Classes printed per sample.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line (default: class indices).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let device = device(args.device)?;
    let input = npy::read(&args.input)?;
    let opts = LoadOptions {
        model: args.model.clone(),
        ema: args.ema,
    };
    let loaded = weights::load(&args.weights, &opts, &device)?;
    let model = loaded.model.valid();
    let cfg = model.config().clone();
    let [n, c, h, w]: [usize; 4] = input.shape.clone().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{}: expected a 4-d [N, C, H, W] array, got shape {:?}",
            args.input.display(),
            input.shape
        )
    })?;
    if c != cfg.in_chans || n == 0 || h == 0 || w == 0 {
        bail!(
            "{}: shape {:?} does not fit {} (expects [N>0, {}, H>0, W>0])",
            args.input.display(),
            input.shape,
            loaded.name,
            cfg.in_chans
        );
    }
    if let Some(i) = input.data.iter().position(|v| !v.is_finite()) {
        bail!("{}: element {i} is NaN or infinite", args.input.display());
    }
    let labels = match &args.labels {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading labels {}", p.display()))?;
            let l: Vec<String> = text.lines().map(str::to_string).collect();
            if l.len() != cfg.num_classes {
                bail!(
                    "{}: {} labels for a model with {} classes",
                    p.display(),
                    l.len(),
                    cfg.num_classes
                );
            }
            Some(l)
        }
        None => None,
    };

    let per = c * h * w;
    let mut logits = Vec::with_capacity(n * cfg.num_classes);
    for start in (0..n).step_by(args.batch_size) {
        let b = args.batch_size.min(n - start);
        let chunk = input.data[start * per..(start + b) * per].to_vec();
        let x = Tensor::<4>::from_data(TensorData::new(chunk, [b, c, h, w]), &device);
        let y = model.forward(x).into_data().convert::<f32>();
        logits.extend(
            y.try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?,
        );
    }
    let k = args.top.min(cfg.num_classes);
    for (i, row) in logits.chunks(cfg.num_classes).enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let exp: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top: Vec<String> = idx[..k]
            .iter()
            .map(|&j| {
                let name = labels.as_ref().map_or_else(|| j.to_string(), |l| l[j].clone());
                format!("{name} {:.4}", exp[j] / sum)
            })
            .collect();
        println!("{i}: {}", top.join(", "));
    }
    if let Some(out) = &args.logits {
        let arr = npy::Array {
            shape: vec![n, cfg.num_classes],
            data: logits,
        };
        npy::write(out, &arr).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote logits [{n}, {}] to {}", cfg.num_classes, out.display());
    }
    Ok(())
}
