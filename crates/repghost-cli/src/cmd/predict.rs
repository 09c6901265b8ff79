//! `repghost predict`: top-K classes of images (or of a preprocessed `.npy` batch), raw
//! logits, and the preprocessed batch the model saw.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use repghost::metrics::top_k;
use repghost::npy;
use repghost_data::dataset::{batches, Files};
use repghost_data::folder::collect_images;
use serde_json::json;

use super::common::{self, ModelArgs, PreprocessArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pre: PreprocessArgs,
    /// Images (JPEG, PNG, WebP, BMP, TIFF, GIF) or folders of them (searched recursively, in
    /// sorted order).
    #[arg(conflicts_with = "input")]
    images: Vec<PathBuf>,
    /// Instead of images: a preprocessed float32/float64 .npy of shape [N, C, H, W].
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write the raw logits [N, classes] as float32 .npy, one row per input in the order
    /// given (rows of images that failed to decode are NaN).
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Write the preprocessed batch the model saw, [N, C, S, S] float32 .npy (images only).
    #[arg(long)]
    save_input: Option<PathBuf>,
    /// Classes printed per input.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line (default: ImageNet's for 1000-class models, else indices).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Print text lines or one JSON array.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Result<()> {
    // Command-line mistakes first, before any weights are read or any file is written.
    if args.save_input.is_some() && args.input.is_some() {
        return Err(crate::usage!(
            "--save-input applies to images, not to an --input .npy"
        ));
    }
    let mut runner = common::load(&args.model)?;
    let cfg = runner.model.config().clone();
    let names = runner.class_names(args.labels.as_ref())?;
    let nc = cfg.num_classes;
    let mut rows: Vec<(String, Option<Vec<f32>>)> = Vec::new();
    let mut seen_inputs: Vec<f32> = Vec::new();
    let mut input_shape = [0usize; 4];
    let mut failures = 0usize;

    if let Some(path) = &args.input {
        let input = npy::read(path)?;
        let [n, c, h, w]: [usize; 4] = input.shape.clone().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: expected a 4-d [N, C, H, W] array, got shape {:?}",
                path.display(),
                input.shape
            )
        })?;
        if c != cfg.in_chans || n == 0 || h == 0 || w == 0 {
            bail!(
                "{}: shape {:?} does not fit {} (expects [N>0, {}, H>0, W>0])",
                path.display(),
                input.shape,
                runner.loaded.name,
                cfg.in_chans
            );
        }
        if let Some(i) = input.data.iter().position(|v| !v.is_finite()) {
            bail!("{}: element {i} is NaN or infinite", path.display());
        }
        let per = c * h * w;
        for start in (0..n).step_by(args.model.batch_size) {
            let b = args.model.batch_size.min(n - start);
            let logits = runner.logits(input.data[start * per..(start + b) * per].to_vec(), [b, c, h, w])?;
            for (j, row) in logits.chunks(nc).enumerate() {
                rows.push((format!("{}", start + j), Some(row.to_vec())));
            }
        }
    } else {
        if args.images.is_empty() {
            return Err(crate::usage!(
                "give images or folders to classify, or --input X.npy"
            ));
        }
        let files = collect_images(&args.images)?;
        let pre = runner.preprocess(&args.pre)?;
        let n = files.len();
        let ds = Arc::new(Files(files.clone()));
        let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut saved: Vec<Option<Vec<f32>>> = vec![None; n];
        for batch in batches(ds, (0..n).collect(), pre.clone(), args.model.batch_size, 2) {
            for (name, err) in &batch.failed {
                eprintln!("skipped: {name}: {err}");
                failures += 1;
            }
            if batch.labels.is_empty() {
                continue;
            }
            let per = batch.shape[1] * batch.shape[2] * batch.shape[3];
            if args.save_input.is_some() {
                for (j, &i) in batch.indices.iter().enumerate() {
                    saved[i] = Some(batch.inputs[j * per..(j + 1) * per].to_vec());
                }
            }
            let logits = runner.logits(batch.inputs, batch.shape)?;
            for (j, &i) in batch.indices.iter().enumerate() {
                out[i] = Some(logits[j * nc..(j + 1) * nc].to_vec());
            }
        }
        input_shape = [n, pre.channels, pre.img_size, pre.img_size];
        if args.save_input.is_some() {
            let per = pre.channels * pre.img_size * pre.img_size;
            for s in saved {
                seen_inputs.extend(s.unwrap_or_else(|| vec![f32::NAN; per]));
            }
        }
        rows = files.iter().map(|f| f.display().to_string()).zip(out).collect();
    }

    let k = args.top.min(nc);
    let mut json_rows = Vec::new();
    for (name, logits) in &rows {
        let Some(row) = logits else { continue };
        let top = top_k(row, k);
        match args.format {
            Format::Text => {
                let t: Vec<String> = top.iter().map(|&(j, p)| format!("{} {p:.4}", names[j])).collect();
                println!("{name}: {}", t.join(", "));
            }
            Format::Json => json_rows.push(json!({
                "input": name,
                "top": top.iter().map(|&(j, p)| json!({"index": j, "class": names[j], "prob": p})).collect::<Vec<_>>(),
            })),
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json_rows)?);
    }
    if let Some(out) = &args.logits {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|(_, l)| l.clone().unwrap_or_else(|| vec![f32::NAN; nc]))
            .collect();
        npy::write(
            out,
            &npy::Array {
                shape: vec![rows.len(), nc],
                data,
            },
        )?;
        eprintln!("wrote logits [{}, {nc}] to {}", rows.len(), out.display());
    }
    if let Some(out) = &args.save_input {
        npy::write(
            out,
            &npy::Array {
                shape: input_shape.to_vec(),
                data: seen_inputs,
            },
        )?;
        eprintln!("wrote preprocessed input {:?} to {}", input_shape, out.display());
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be decoded", rows.len());
    }
    Ok(())
}
