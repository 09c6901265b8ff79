//! `repghost eval`: accuracy of a model on an ImageFolder or on Fashion-MNIST, streamed in
//! batches (bounded memory) with decoding on all cores.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Result};
use repghost::train::evaluate_streaming;
use repghost_data::idx::Split;

use super::common::{self, ModelArgs, PreprocessArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pre: PreprocessArgs,
    /// An ImageFolder directory (one sub-folder per class; if it holds train/ and val/ or
    /// test/, the split's folder is used), `fashion-mnist` (the Debian package
    /// dataset-fashion-mnist), or a folder holding the four Fashion-MNIST IDX files.
    #[arg(long)]
    data: String,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Evaluate the first N samples only.
    #[arg(long)]
    limit: Option<usize>,
    /// Print a table or one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum SplitArg {
    Test,
    Train,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Result<()> {
    let mut runner = common::load(&args.model)?;
    let pre = runner.preprocess(&args.pre)?;
    let split = if args.split == SplitArg::Train {
        Split::Train
    } else {
        Split::Test
    };
    let ds = repghost_data::open(&args.data, split)?;
    let classes = ds.classes();
    let nc = runner.model.config().num_classes;
    if classes.len() > nc {
        bail!(
            "{}: {} classes but the model has only {nc} outputs",
            args.data,
            classes.len()
        );
    }
    let n = args.limit.map_or(ds.len(), |l| l.min(ds.len()));
    if n == 0 {
        bail!("{}: nothing to evaluate", args.data);
    }

    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(n as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        Some(b)
    } else {
        None
    };
    let start = Instant::now();
    let mut next_log = n / 10;
    let indices: Vec<usize> = (0..n).collect();
    let e = evaluate_streaming(
        &mut runner,
        ds.clone(),
        &indices,
        &pre,
        args.model.batch_size,
        &mut |done, acc| {
            let msg = format!("top-1 {:.2}%", 100.0 * acc.top1());
            match &bar {
                Some(b) => {
                    b.set_position(done as u64);
                    b.set_message(msg);
                }
                None if done >= next_log => {
                    eprintln!(
                        "{done}/{n} images, {msg}, {:.1} images/s",
                        done as f64 / start.elapsed().as_secs_f64()
                    );
                    next_log = done + n / 10;
                }
                None => {}
            }
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (r, failed) = (e.report, e.failed);
    let secs = start.elapsed().as_secs_f64();
    let rate = r.images as f64 / secs;
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&r)?;
            v["images_per_second"] = rate.into();
            v["failed"] = failed
                .iter()
                .map(|(f, e)| format!("{f}: {e}"))
                .collect::<Vec<_>>()
                .into();
            v["model"] = runner.loaded.name.clone().into();
            v["engine"] = runner.engine_name().into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            println!(
                "{} on {} ({} images, {} engine)",
                runner.loaded.name,
                args.data,
                r.images,
                runner.engine_name()
            );
            println!(
                "top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  {:.1} images/s",
                100.0 * r.top1,
                100.0 * r.top5,
                r.loss,
                rate
            );
            if r.per_class.len() <= 100 {
                for c in &r.per_class {
                    println!(
                        "  {:<24} {:>6} images  top-1 {:.2}%",
                        c.class,
                        c.images,
                        100.0 * c.top1
                    );
                }
            }
        }
    }
    for (f, e) in &failed {
        eprintln!("skipped: {f}: {e}");
    }
    if !failed.is_empty() {
        bail!("{} images could not be decoded and were left out", failed.len());
    }
    Ok(())
}
