//! Timing of the engines on the same weights, for `repghost bench`, `repghost report` and the
//! demo: burn's forward pass, the deploy runtime, a full training step, and the join that
//! separates RepGhost from GhostNet (concatenation against addition). Speed is measured here,
//! never in tests. Every figure is in milliseconds.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use repghost_data::Rng;
use repghost_runtime::Layout;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::sgd::Sgd;
use crate::train::step::{gradients, StepBatch};

/// Median, minimum and maximum of `runs` timings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Times `runs` calls of `f` after a warm-up of a tenth of them (at least two).
pub fn time(runs: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..(runs / 10).max(2) {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    Timing {
        median: t[t.len() / 2],
        min: t[0],
        max: t[t.len() - 1],
    }
}

/// [`time`] of a call that can fail; the first error ends the measurement.
pub fn time_fallible<E>(runs: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Timing, E> {
    let mut err = None;
    let t = time(runs, || {
        if err.is_none() {
            err = f().err();
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(t),
    }
}

/// burn's forward pass of `model` on a random `shape` batch.
pub fn burn_forward(model: &Model, shape: [usize; 4], device: &Device, runs: usize) -> Timing {
    let x = Rng::new(1).normals(shape.iter().product());
    let t = Tensor::<4>::from_data(TensorData::new(x, shape), device);
    time(runs, || {
        std::hint::black_box(model.forward(t.clone()).into_data());
    })
}

/// The runtime on a random `shape` batch (NCHW) with `threads` threads.
pub fn runtime_forward(
    rt: &repghost_runtime::Model,
    shape: [usize; 4],
    threads: usize,
    runs: usize,
) -> Result<Timing> {
    let x = Rng::new(1).normals(shape.iter().product());
    let mut ws = rt.workspace_threads(shape[0], shape[2], shape[3], threads)?;
    Ok(time_fallible(runs, || {
        rt.run(&mut ws, &x, Layout::Nchw).map(|_| ())
    })?)
}

/// A full SGD step of the train form (BatchNorm on batch statistics, label-smoothed loss,
/// backward, Nesterov update) on `x` of `shape` on `device`, the batch split between
/// `workers` threads. Each step waits for its loss, so on a GPU the time includes the
/// previous step's update.
pub fn train_step(
    model: &Model,
    x: &[f32],
    shape: [usize; 4],
    workers: usize,
    runs: usize,
    device: &Device,
) -> Result<Timing> {
    if shape[0] < 2 {
        return Err(Error::Invalid(
            "a training step needs a batch of at least 2 (BatchNorm statistics)".into(),
        ));
    }
    let device = device.clone().autodiff();
    let mut m = Some(model.clone().to_device(&device).train());
    let labels: Vec<usize> = (0..shape[0]).map(|i| i % model.config().num_classes).collect();
    let mut sgd = Sgd::new(0.9, true, 1e-5);
    let devices = [device];
    Ok(time(runs, || {
        let b = StepBatch {
            inputs: x,
            shape,
            labels: &labels,
            keep: None,
        };
        let cur = m.take().expect("the model is put back after every step");
        let (_, g) = gradients(&cur, &b, workers, 0.1, &devices);
        m = Some(sgd.step(cur, g, 1e-3));
    }))
}

/// Joining two `[n, c, hw, hw]` maps (NCHW, as PyTorch holds them) by concatenation along the
/// channels, and by addition: `(concat, add)`.
pub fn concat_vs_add(n: usize, c: usize, hw: usize, runs: usize) -> (Timing, Timing) {
    let per = c * hw * hw;
    let a = Rng::new(2).normals(n * per);
    let b = Rng::new(3).normals(n * per);
    let mut cat = vec![0f32; 2 * n * per];
    let mut sum = vec![0f32; n * per];
    let concat = time(runs, || {
        for i in 0..n {
            cat[2 * i * per..(2 * i + 1) * per].copy_from_slice(&a[i * per..(i + 1) * per]);
            cat[(2 * i + 1) * per..(2 * i + 2) * per].copy_from_slice(&b[i * per..(i + 1) * per]);
        }
        std::hint::black_box(&cat);
    });
    let add = time(runs, || {
        sum.iter_mut()
            .zip(a.iter().zip(&b))
            .for_each(|(s, (x, y))| *s = x + y);
        std::hint::black_box(&sum);
    });
    (concat, add)
}

/// The CPU's model name (`/proc/cpuinfo`), to print beside every figure.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// One 1×1 convolution of the deploy runtime, timed alone with its data hot in cache, with
/// the packed kernel this CPU runs and through the gemm crate.
pub type PointwiseLayer = repghost_runtime::PointwiseTiming<Timing>;

/// Every 1×1 convolution of `model` at batch 1 on a `size × size` input, each timed with the
/// packed kernel and with the gemm crate (data hot: this is the kernel's rate, not the
/// layer's share of a whole forward pass, which `Workspace::profile` gives).
pub fn pointwise_layers(model: &repghost_runtime::Model, size: usize, runs: usize) -> Vec<PointwiseLayer> {
    model.time_pointwise_layers(size, |f| time(runs, f))
}

/// A one-thread SGEMM of `m × k × n` through the gemm crate (`[m, k] × [k, n]`, no
/// epilogue): the machine's reference rate for a GEMM. Returns GFLOP/s of the median run.
pub fn sgemm_rate(m: usize, k: usize, n: usize, runs: usize) -> f64 {
    let t = repghost_runtime::time_sgemm(m, k, n, |f| time(runs, f));
    2.0 * (m * k * n) as f64 / (t.median * 1e-3) / 1e9
}
