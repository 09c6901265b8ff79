//! `repghost quantize`: static post-training INT8 quantization of a model, calibrated on
//! images of an ImageFolder or Fashion-MNIST with the model's own preprocessing.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use repghost::quantize::{calibrate, deploy_bytes, spread, sqnr};
use repghost_data::idx::Split;
use repghost_runtime::quant::{Clip, QuantizeOptions};

use super::common::WeightsArgs;
use crate::device::{device, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    src: WeightsArgs,
    /// Calibration images: an ImageFolder directory (its train/ split where it has one),
    /// `fashion-mnist`, or a folder holding the Fashion-MNIST IDX files.
    #[arg(long)]
    calib: String,
    /// Images to calibrate on, spread evenly over the dataset.
    #[arg(long, default_value_t = 512)]
    calib_images: usize,
    /// How each activation's range is chosen from the calibration values: `minmax`,
    /// `percentile:P` (the P-th and (100 − P)-th percentiles) or `mse` (the range of least
    /// quantization error).
    #[arg(long, default_value = "percentile:99.99")]
    clip: String,
    /// One weight scale per layer instead of one per output channel.
    #[arg(long)]
    per_layer_weights: bool,
    /// Then print the signal-to-quantization-noise ratio (dB) at every quantization point:
    /// the simulated INT8 network against the float one, on this many of the calibration
    /// images (where the error enters and how it grows; 0: not measured).
    #[arg(long, default_value_t = 0)]
    sqnr: usize,
    /// The INT8 safetensors file to write.
    #[arg(long)]
    out: PathBuf,
    /// Print a line of text or one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Result<()> {
    let clip = Clip::parse(&args.clip).ok_or_else(|| {
        crate::usage!(
            "--clip {}: expected minmax, mse or percentile:P with 50 < P <= 100",
            args.clip
        )
    })?;
    if args.calib_images == 0 {
        return Err(crate::usage!("--calib-images must be at least 1"));
    }
    let loaded = args.src.load(&device(DeviceArg::Cpu)?)?;
    if loaded.int8 {
        anyhow::bail!("{}: already holds INT8 weights", args.src.weights.display());
    }
    let channels = loaded.model.config().in_chans;
    let pre = loaded
        .preprocess
        .clone()
        .unwrap_or_else(|| repghost_data::Preprocess::imagenet_for(channels));
    let deploy = deploy_bytes(&loaded)?;
    let ds = repghost_data::open(&args.calib, Split::Train)?;
    let indices = spread(ds.as_ref(), args.calib_images);
    let probe: Vec<usize> = indices.iter().copied().take(args.sqnr).collect();
    let probe_ds = ds.clone();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(indices.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "calibrating {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template"),
        );
        b
    });
    let start = std::time::Instant::now();
    let (cal, failed) = calibrate(&deploy, ds, &indices, &pre, &mut |seen| {
        if let Some(b) = &bar {
            b.set_position(seen as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let opts = QuantizeOptions {
        clip,
        per_channel: !args.per_layer_weights,
    };
    let bytes = cal.quantize(&opts)?;
    repghost::fsutil::write_atomic(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let table = if probe.is_empty() {
        Vec::new()
    } else {
        sqnr(&deploy, &bytes, probe_ds, &probe, &pre)?
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "model": loaded.name,
                "out": args.out.display().to_string(),
                "calibration_images": cal.images(),
                "unreadable_images": failed,
                "clip": clip.name(),
                "weights": if opts.per_channel { "per-channel" } else { "per-layer" },
                "bytes": bytes.len(),
                "seconds": secs,
                "sqnr_images": if table.is_empty() { 0 } else { probe.len() },
                "sqnr_db": table.iter().map(|p| serde_json::json!({
                    "point": p.key, "after_se": p.after_se, "db": p.db,
                })).collect::<Vec<_>>(),
            })
        ),
        Format::Text => println!(
            "{}: {} INT8 ({} weights, activations clipped by {}, {} calibration images{}) written to {} ({:.1} MB, {secs:.1} s)",
            args.src.weights.display(),
            loaded.name,
            if opts.per_channel { "per-channel" } else { "per-layer" },
            clip.name(),
            cal.images(),
            if failed > 0 { format!(", {failed} unreadable skipped") } else { String::new() },
            args.out.display(),
            bytes.len() as f64 / 1e6
        ),
    }
    if args.format == Format::Text && !table.is_empty() {
        println!(
            "SQNR at each quantization point, on {} calibration images:",
            probe.len()
        );
        for p in &table {
            let what = if p.after_se { " (after SE)" } else { "" };
            println!("  {:>6.1} dB  {}{what}", p.db, p.key);
        }
    }
    Ok(())
}
