//! `repghost convert`: the official `convert.py`, extended to fold every BatchNorm, and the
//! import of any supported checkpoint into the native format.

use std::path::PathBuf;

use super::common::WeightsArgs;
use anyhow::{bail, Context, Result};
use burn::tensor::{Distribution, Tensor};
use repghost::weights::{self, Form, Storage};

use crate::device::{device, DeviceArg};

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormArg {
    Deploy,
    Train,
    Fused,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    src: WeightsArgs,
    /// Output weights (.safetensors with metadata), written atomically.
    #[arg(long)]
    out: PathBuf,
    /// Form to write: `deploy` folds every BatchNorm and branch (for inference); `train`
    /// imports the checkpoint unchanged into the native format (for fine-tuning); `fused`
    /// folds only the fusion branches, like the official convert.py.
    #[arg(long, value_enum, default_value = "deploy")]
    form: FormArg,
    /// How the written tensors are stored: `f32`, or `f16` (half the file; every value rounded
    /// to 11 significant bits, widened to f32 when loaded: every engine computes in f32). A
    /// value beyond f16's range (±65504) is refused.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
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
    let loaded = args.src.load(&device)?;
    eprintln!(
        "loaded {} ({} form, {}) from {}",
        loaded.name,
        loaded.form.as_str(),
        loaded.source,
        args.src.weights.display()
    );
    let train = loaded.model.valid();
    let (deploy, form) = match args.form {
        FormArg::Deploy => (train.clone().reparameterize(), Form::Deploy),
        FormArg::Fused if loaded.form != Form::Deploy => (train.clone().fuse_branches(), Form::Fused),
        FormArg::Train if loaded.form == Form::Train => (train.clone(), Form::Train),
        _ => bail!(
            "{}: holds {} weights, which cannot be turned back into the {} form",
            args.src.weights.display(),
            loaded.form.as_str(),
            if matches!(args.form, FormArg::Train) {
                "train"
            } else {
                "fused"
            }
        ),
    };
    if args.check {
        let cfg = train.config();
        device.seed(0);
        let x = Tensor::<4>::random(
            [2, cfg.in_chans, 224, 224],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let rel = repghost::reparam::folding_error(&train, &deploy, x)?;
        println!(
            "check: max |train - deploy| / max |train logit| = {rel:.3e} (tolerance {:.0e})",
            args.tolerance
        );
        if rel.is_nan() || rel > args.tolerance {
            bail!("deploy form differs from the train form by {rel:.3e} relative; nothing written");
        }
    }
    let storage = match args.dtype {
        DtypeArg::F32 => Storage::F32,
        DtypeArg::F16 => Storage::F16,
    };
    weights::save(
        &deploy,
        &loaded.name,
        form,
        loaded.preprocess.as_ref(),
        storage,
        &args.out,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    let c = match form {
        Form::Deploy => deploy.count([224, 224]),
        _ => deploy.reparameterize().count([224, 224]),
    };
    println!(
        "wrote {} ({} {} form, {}; deployed: {} params, {:.2} M MACs at 224x224)",
        args.out.display(),
        loaded.name,
        form.as_str(),
        storage.as_str(),
        c.params,
        c.macs as f64 / 1e6
    );
    Ok(())
}
