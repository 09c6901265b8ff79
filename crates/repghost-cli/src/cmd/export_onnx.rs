//! `repghost export-onnx`: any variant, train or deploy form, as an ONNX model.

use std::path::PathBuf;

use super::common::WeightsArgs;
use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use repghost::onnx::{export, export_int8, ExportOptions};
use repghost::weights::Form;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    src: WeightsArgs,
    /// Output .onnx file (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// ONNX opset (11–21).
    #[arg(long, default_value_t = 13)]
    opset: i64,
    /// A symbolic batch dimension instead of batch 1.
    #[arg(long)]
    dynamic_batch: bool,
    /// `deploy`: every BatchNorm and branch folded (what the paper deploys); `train`: the
    /// training structure with BatchNormalization nodes. An INT8 file (`repghost quantize`)
    /// exports as a deploy-form QDQ graph (QuantizeLinear/DequantizeLinear with its scales;
    /// opset 13 or later).
    #[arg(long, value_enum, default_value = "deploy")]
    form: FormArg,
    /// Input size recorded in the graph (height and width) [default: the weights'
    /// preprocessing size, else 224].
    #[arg(long)]
    size: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum FormArg {
    Deploy,
    Train,
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::flex();
    let loaded = args.src.load(&device)?;
    let size = args
        .size
        .or(loaded.preprocess.as_ref().map(|p| p.img_size))
        .unwrap_or(224);
    let export_opts = ExportOptions {
        opset: args.opset,
        dynamic_batch: args.dynamic_batch,
        size: [size, size],
    };
    if loaded.int8 {
        if args.form == FormArg::Train {
            bail!(
                "{}: an INT8 file holds deploy weights; the train form cannot be recovered",
                args.src.weights.display()
            );
        }
        let bytes = std::fs::read(&args.src.weights)
            .with_context(|| format!("reading {}", args.src.weights.display()))?;
        let onnx = export_int8(&args.src.weights, &bytes, &export_opts)?;
        repghost::fsutil::write_atomic(&args.out, &onnx)
            .with_context(|| format!("writing {}", args.out.display()))?;
        println!(
            "wrote {} ({} INT8 QDQ, opset {}, {} bytes{})",
            args.out.display(),
            loaded.name,
            args.opset,
            onnx.len(),
            if args.dynamic_batch { ", dynamic batch" } else { "" }
        );
        return Ok(());
    }
    let model = loaded.model.valid();
    let (model, form) = match (args.form, loaded.form) {
        (FormArg::Deploy, Form::Deploy) => (model, Form::Deploy),
        (FormArg::Deploy, _) => (model.reparameterize(), Form::Deploy),
        (FormArg::Train, Form::Train) => (model, Form::Train),
        (FormArg::Train, f) => bail!(
            "{}: holds {} weights; the train form cannot be recovered",
            args.src.weights.display(),
            f.as_str()
        ),
    };
    let bytes = export(
        &model,
        &loaded.name,
        form,
        loaded.preprocess.as_ref(),
        &export_opts,
    )?;
    repghost::fsutil::write_atomic(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} {} form, opset {}, {} bytes{})",
        args.out.display(),
        loaded.name,
        form.as_str(),
        args.opset,
        bytes.len(),
        if args.dynamic_batch { ", dynamic batch" } else { "" }
    );
    Ok(())
}
