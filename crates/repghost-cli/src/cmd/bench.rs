//! `repghost bench`: latency and throughput of the engines on the same weights. Speed is
//! measured here (and in scripts/bench_ort.py, which runs ONNX Runtime beside it), never in
//! tests.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};
use repghost::bench;
use repghost::engine::to_runtime;
use repghost::random::Rng;
use repghost::variants::resolve;
use repghost::weights::{self, Form, LoadOptions};
use repghost::Model as BurnModel;
use repghost_runtime::Layout;
use serde_json::json;

use crate::device::{device as burn_device, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Models to measure (random weights), e.g. repghostnet_100 ghostnet_100.
    #[arg(long, num_args = 1.., default_value = "repghostnet_100")]
    model: Vec<String>,
    /// Measure these weights instead of random ones (deploy form for the runtime; an INT8
    /// file runs the INT8 kernels).
    #[arg(long, conflicts_with = "model")]
    weights: Option<PathBuf>,
    /// The runtime's precision for random weights: `int8` quantizes them, calibrated on
    /// the benchmark's own random input (for timing only).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Engines: our runtime, burn's deploy forward, burn's train form (eval mode), or a
    /// whole training step of the train form (forward, backward, SGD update; batch ≥ 2).
    #[arg(long, value_enum, num_args = 1.., default_values = ["runtime"])]
    engine: Vec<Engine>,
    /// Thread counts to measure.
    #[arg(long, num_args = 1.., default_values_t = [1usize])]
    threads: Vec<usize>,
    /// Batch sizes to measure.
    #[arg(long, num_args = 1.., default_values_t = [1usize])]
    batch: Vec<usize>,
    /// train-step: threads that each compute the gradients of a part of the batch (as
    /// `repghost train --workers`); other engines ignore it.
    #[arg(long, num_args = 1.., default_values_t = [1usize])]
    workers: Vec<usize>,
    /// Where burn's engines (burn, burn-train, train-step) compute; the runtime is CPU-only.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Input resolution (square).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed runs per measurement (after warm-up).
    #[arg(long, default_value_t = 60)]
    runs: usize,
    /// Also print where the runtime's time goes, per kind of layer.
    #[arg(long)]
    profile: bool,
    /// Instead of whole forward passes: time each 1×1 convolution of the runtime alone (batch
    /// 1, data hot), with this CPU's packed kernel and with the gemm crate, beside a
    /// one-thread SGEMM through the gemm crate as the machine's reference rate; with an
    /// INT8 file or `--precision int8`, the INT8 kernel of each quantized layer too.
    #[arg(long)]
    layers: bool,
    /// Runtime: run every bottleneck layer by layer instead of depth-first in strips of rows
    /// (for comparing the two).
    #[arg(long)]
    layer_by_layer: bool,
    /// Text lines or one JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Precision {
    F32,
    Int8,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Debug)]
enum Engine {
    Runtime,
    Burn,
    BurnTrain,
    TrainStep,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

/// Median and minimum of `runs` timings of `f` in milliseconds.
fn timed(runs: usize, f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    let t = bench::time_fallible(runs, f)?;
    Ok((t.median, t.min))
}

pub fn run(args: Args) -> Result<()> {
    if args.runs == 0
        || args.size < 32
        || args.threads.contains(&0)
        || args.batch.contains(&0)
        || args.workers.contains(&0)
    {
        return Err(crate::usage!(
            "--runs, --threads, --batch and --workers must be positive and --size at least 32"
        ));
    }
    let device = Device::flex();
    let models: Vec<(String, BurnModel, Option<BurnModel>)> = match &args.weights {
        Some(w) => {
            let l = weights::load(w, &LoadOptions::default(), &device)?;
            let m = l.model.valid();
            match l.form {
                Form::Deploy => vec![(l.name, m, None)],
                _ => vec![(l.name, m.clone().reparameterize(), Some(m))],
            }
        }
        None => args
            .model
            .iter()
            .map(|name| {
                let (name, v) = resolve(name)?;
                let train = BurnModel::new(&v.config(1000), &device).valid();
                Ok((name, train.clone().reparameterize(), Some(train)))
            })
            .collect::<Result<_>>()?,
    };
    let int8_file = match &args.weights {
        Some(w) => repghost_runtime::quant::is_int8(&std::fs::read(w)?),
        None => false,
    };
    if args.layers {
        return layers(&args, &models, int8_file);
    }
    for (name, deploy, train) in &models {
        let f32_rt = to_runtime(deploy, Form::Deploy, name)?;
        let cin = deploy.config().in_chans;
        for &batch in &args.batch {
            let shape = [batch, cin, args.size, args.size];
            let mut rng = Rng::new(1);
            let x = rng.normals(shape.iter().product());
            let int8_rt = int8_runtime(&args, int8_file, deploy, name, &x, shape)?;
            let rt = int8_rt.as_ref().unwrap_or(&f32_rt);
            for &threads in &args.threads {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
                for &engine in &args.engine {
                    // Only a training step splits its batch between workers.
                    let counts = if engine == Engine::TrainStep {
                        &args.workers[..]
                    } else {
                        &[1]
                    };
                    for &workers in counts {
                        let (median, min) = match engine {
                            Engine::Runtime => {
                                let mut ws = rt.workspace_threads(batch, args.size, args.size, threads)?;
                                if args.layer_by_layer {
                                    ws.depth_first_min = usize::MAX;
                                }
                                let r = pool.install(|| {
                                    timed(args.runs, || {
                                        rt.run(&mut ws, &x, Layout::Nchw).map(|_| ()).map_err(Into::into)
                                    })
                                })?;
                                if args.profile {
                                    ws.profile = Some(repghost_runtime::Profile::default());
                                    for _ in 0..args.runs {
                                        pool.install(|| rt.run(&mut ws, &x, Layout::Nchw))?;
                                    }
                                    let p = ws.profile.take().unwrap_or_default();
                                    let total: f64 = p.entries.iter().map(|e| e.1).sum();
                                    for (kind, ms, calls) in p.entries {
                                        eprintln!(
                                            "  {kind:<14} {:7.3} ms/run {:5.1}%  ({} calls/run)",
                                            ms / args.runs as f64,
                                            100.0 * ms / total,
                                            calls / args.runs as u64
                                        );
                                    }
                                }
                                r
                            }
                            Engine::TrainStep => {
                                let Some(m) = train else { continue };
                                if batch < 2 {
                                    return Err(crate::usage!(
                                        "train-step needs --batch of at least 2 (BatchNorm statistics)"
                                    ));
                                }
                                let dev = burn_device(args.device)?;
                                let t = pool.install(|| {
                                    bench::train_step(m, &x, shape, workers, args.runs.min(20), &dev)
                                })?;
                                (t.median, t.min)
                            }
                            Engine::Burn | Engine::BurnTrain => {
                                let m = if engine == Engine::Burn {
                                    Some(deploy)
                                } else {
                                    train.as_ref()
                                };
                                let Some(m) = m else { continue };
                                let dev = burn_device(args.device)?;
                                let m = &m.clone().to_device(&dev);
                                let t = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &dev);
                                pool.install(|| {
                                    timed(args.runs, || {
                                        let y = m.forward(t.clone()).into_data();
                                        std::hint::black_box(y);
                                        Ok(())
                                    })
                                })?
                            }
                        };
                        let eng = format!("{engine:?}")
                            .to_lowercase()
                            .replace("burntrain", "burn-train")
                            .replace("trainstep", "train-step")
                            + if engine == Engine::Runtime && int8_rt.is_some() {
                                "-int8"
                            } else {
                                ""
                            };
                        match args.format {
                            Format::Json => println!(
                                "{}",
                                json!({"model": name, "engine": eng, "device": format!("{:?}", args.device).to_lowercase(), "threads": threads, "batch": batch, "size": args.size,
                                       "workers": workers, "median_ms": median, "min_ms": min, "images_per_s": batch as f64 * 1e3 / median,
                                       "simd": repghost_runtime::simd_level().name()})
                            ),
                            Format::Text => {
                                let split = if engine == Engine::TrainStep {
                                    format!(" workers {workers}")
                                } else {
                                    String::new()
                                };
                                println!(
                                    "{name:<18} {eng:<12} threads {threads}{split} batch {batch:<3} median {median:8.2} ms  min {min:8.2} ms  {:8.1} img/s",
                                    batch as f64 * 1e3 / median
                                )
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The INT8 runtime the arguments ask for: the `--weights` file when it is INT8, or the
/// random weights quantized on the input `x` with `--precision int8`; `None` for FP32.
fn int8_runtime(
    args: &Args,
    int8_file: bool,
    deploy: &BurnModel,
    name: &str,
    x: &[f32],
    shape: [usize; 4],
) -> Result<Option<repghost_runtime::Model>> {
    Ok(match (&args.weights, args.precision) {
        (Some(w), _) if int8_file => Some(repghost_runtime::Model::load(w)?),
        (None, Precision::Int8) => Some(repghost::quantize::int8_runtime(deploy, name, x, shape)?),
        _ => None,
    })
}

/// `--layers`: the 1×1 convolutions one by one (with the INT8 kernels too for an INT8 file or
/// `--precision int8`).
fn layers(args: &Args, models: &[(String, BurnModel, Option<BurnModel>)], int8_file: bool) -> Result<()> {
    let (m, k, n) = (1024, 512, 512);
    let peak = bench::sgemm_rate(m, k, n, args.runs);
    let simd = repghost_runtime::simd_level().name();
    if args.format == Format::Text {
        println!("SGEMM {m}x{k}x{n} through the gemm crate, one thread: {peak:.1} GFLOP/s ({simd})");
    } else {
        println!("{}", json!({"sgemm": [m, k, n], "gflops": peak, "simd": simd}));
    }
    for (name, deploy, _) in models {
        let shape = [1, deploy.config().in_chans, args.size, args.size];
        let x = Rng::new(1).normals(shape.iter().product());
        let rt = match int8_runtime(args, int8_file, deploy, name, &x, shape)? {
            Some(q) => q,
            None => to_runtime(deploy, Form::Deploy, name)?,
        };
        let rows = bench::pointwise_layers(&rt, args.size, args.runs);
        let (mut packed, mut generic, mut flop) = (0.0, 0.0, 0.0);
        // The quantized layers' totals: their FP32 packed time, INT8 time and operations.
        let (mut q_f32, mut q_int8, mut q_op) = (0.0, 0.0, 0.0);
        for r in &rows {
            let rate = |ms: f64| r.flop() / (ms * 1e-3) / 1e9;
            packed += r.packed.median;
            generic += r.generic.median;
            flop += r.flop();
            if let Some(q) = &r.int8 {
                (q_f32, q_int8, q_op) = (q_f32 + r.packed.median, q_int8 + q.median, q_op + r.flop());
            }
            match args.format {
                Format::Text => println!(
                    "{name} {:<20} m {:5} k {:4} n {:4}  packed {:7.1} us {:6.1} GFLOP/s   gemm crate {:7.1} us {:6.1} GFLOP/s{}",
                    r.name,
                    r.m,
                    r.k,
                    r.n,
                    r.packed.median * 1e3,
                    rate(r.packed.median),
                    r.generic.median * 1e3,
                    rate(r.generic.median),
                    match &r.int8 {
                        Some(q) => format!(
                            "   int8 {:7.1} us {:6.1} GOP/s ({:.2}x packed)",
                            q.median * 1e3,
                            rate(q.median),
                            q.median / r.packed.median
                        ),
                        None => String::new(),
                    }
                ),
                Format::Json => println!(
                    "{}",
                    json!({"model": name, "layer": r.name, "m": r.m, "k": r.k, "n": r.n, "packed_ms": r.packed.median,
                           "gemm_crate_ms": r.generic.median, "int8_ms": r.int8.as_ref().map(|q| q.median), "simd": simd})
                ),
            }
        }
        if args.format == Format::Text {
            println!(
                "{name} all {} 1x1 convs: packed {packed:.3} ms ({:.1} GFLOP/s), gemm crate {generic:.3} ms ({:.1} GFLOP/s)",
                rows.len(),
                flop / (packed * 1e-3) / 1e9,
                flop / (generic * 1e-3) / 1e9
            );
            if q_op > 0.0 {
                println!(
                    "{name} the {} int8 1x1 convs: int8 {q_int8:.3} ms ({:.1} GOP/s), packed f32 {q_f32:.3} ms ({:.1} GFLOP/s)",
                    rows.iter().filter(|r| r.int8.is_some()).count(),
                    q_op / (q_int8 * 1e-3) / 1e9,
                    q_op / (q_f32 * 1e-3) / 1e9
                );
            }
        }
    }
    Ok(())
}
