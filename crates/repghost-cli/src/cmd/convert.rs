//! `repghost convert`: the official `convert.py`, extended to fold every BatchNorm.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::{Distribution, Tensor};
use repghost::weights::{self, Form, LoadOptions};

use crate::device::{device, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Input weights: official .pth/.pth.tar (training checkpoint or convert.py output),
    /// a timm .pth/.safetensors, or a native .safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// Model name; needed only when the file's metadata and tensor shapes do not decide it.
    #[arg(long)]
    model: Option<String>,
    /// Convert the EMA weights (`state_dict_ema`) of a training checkpoint.
    #[arg(long)]
    ema: bool,
    /// Output deploy weights (.safetensors with metadata), written atomically.
    #[arg(long)]
    out: PathBuf,
    /// Run train and deploy form on random 224x224 input, print the difference, fail if the
    /// relative difference (max |diff| / max |logit|) exceeds --tolerance.
    #[arg(long)]
    check: bool,
    /// Tolerance for --check.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    let device = device(args.device)?;
    let opts = LoadOptions {
        model: args.model.clone(),
        ema: args.ema,
    };
    let loaded = weights::load(&args.weights, &opts, &device)?;
    eprintln!(
        "loaded {} ({} form, {}) from {}",
        loaded.name,
        loaded.form.as_str(),
        loaded.source,
        args.weights.display()
    );
    let train = loaded.model.valid();
    let deploy = train.clone().reparameterize();
    if args.check {
        let cfg = train.config();
        device.seed(0);
        let x = Tensor::<4>::random(
            [2, cfg.in_chans, 224, 224],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let a = train
            .forward(x.clone())
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .ok()
            .unwrap_or_default();
        let b = deploy
            .forward(x)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .ok()
            .unwrap_or_default();
        let max_abs = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let rel = (max_abs / scale) as f64;
        println!(
            "check: max |train - deploy| = {max_abs:.3e}, relative {rel:.3e} (tolerance {:.0e})",
            args.tolerance
        );
        if rel.is_nan() || rel > args.tolerance {
            bail!("deploy form differs from the train form by {rel:.3e} relative; nothing written");
        }
    }
    weights::save(&deploy, &loaded.name, Form::Deploy, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let c = deploy.count([224, 224]);
    println!(
        "wrote {} ({} deploy form: {} params, {:.2} M MACs at 224x224)",
        args.out.display(),
        loaded.name,
        c.params,
        c.macs as f64 / 1e6
    );
    Ok(())
}
