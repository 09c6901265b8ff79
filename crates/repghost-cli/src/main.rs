//! `repghost`: RepGhostNet from the command line. Every error is one line on stderr and a
//! non-zero exit code (2 for usage errors: bad flags, unknown model names; 1 for everything
//! else: missing or corrupt files, mismatched weights, failed computations).

#![forbid(unsafe_code)]

mod cmd;
mod device;

use clap::{Parser, Subcommand};

/// RepGhostNet (Chen et al., arXiv 2211.06088) in Rust: inspect the family, convert official,
/// timm or native checkpoints to the re-parameterized deploy form, classify images, evaluate.
#[derive(Parser)]
#[command(name = "repghost", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print parameters and MACs of the deploy form for every variant (or one).
    Info(cmd::info::Args),
    /// Re-parameterize a checkpoint (train or official convert.py form) into deploy weights.
    Convert(cmd::convert::Args),
    /// Quantize a model to INT8 (static, calibrated on images) for the runtime's INT8 kernels.
    Quantize(cmd::quantize::Args),
    /// Classify images (or a preprocessed .npy batch): top-K classes, raw logits.
    Predict(cmd::predict::Args),
    /// Accuracy, loss and per-class accuracy on an ImageFolder or Fashion-MNIST.
    Eval(cmd::eval::Args),
    /// Latency and throughput of the runtime and of burn on the same weights.
    Bench(cmd::bench::Args),
    /// Export any variant, train or deploy form, to ONNX.
    ExportOnnx(cmd::export_onnx::Args),
    /// Re-measure the paper's hardware claims on this machine; writes report/REPORT.md.
    Report(cmd::report::Args),
    /// Train or fine-tune with the paper's recipe; resumable, with metrics and curves.
    Train(cmd::train::Args),
    /// A few minutes on Fashion-MNIST: train, evaluate, re-parameterize, classify, report.
    Demo(cmd::demo::Args),
}

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal error: {}", msg.lines().next().unwrap_or(""));
        std::process::exit(1);
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => cmd::info::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::ExportOnnx(a) => cmd::export_onnx::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Demo(a) => cmd::demo::run(a),
    };
    if let Err(e) = result {
        // Library errors already include their source in their message; skip a cause the
        // message so far already says.
        let mut msg = String::new();
        for c in e.chain() {
            let t = c.to_string();
            if !msg.contains(&t) {
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&t);
            }
        }
        eprintln!("error: {}", msg.lines().next().unwrap_or(""));
        std::process::exit(exit_code(&e));
    }
}

/// 2 for command-line mistakes (as clap uses for its own), 1 for everything else.
fn exit_code(e: &anyhow::Error) -> i32 {
    let usage = e.chain().any(|c| {
        c.is::<cmd::Usage>()
            || matches!(
                c.downcast_ref::<repghost::Error>(),
                Some(repghost::Error::UnknownModel { .. })
            )
    });
    if usage {
        2
    } else {
        1
    }
}
