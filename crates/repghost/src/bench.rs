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

/// One 1×1 convolution of the deploy runtime, timed alone with its data hot in cache.
#[derive(Clone, Debug, PartialEq)]
pub struct PointwiseLayer {
    /// Where it sits: `blocks.3 ghost1`, `final_conv`, …
    pub name: String,
    /// Pixels (rows of the GEMM), input and output channels.
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// The packed kernel this CPU runs ([`repghost_runtime::kernels::pointwise::Kernel`]).
    pub packed: Timing,
    /// The same layer through the gemm crate with a separate epilogue pass.
    pub generic: Timing,
}

impl PointwiseLayer {
    pub fn flop(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// Every 1×1 convolution of `model` at batch 1 on a `size × size` input, each timed with the
/// packed kernel and with the gemm crate (data hot: this is the kernel's rate, not the
/// layer's share of a whole forward pass, which `Workspace::profile` gives).
pub fn pointwise_layers(model: &repghost_runtime::Model, size: usize, runs: usize) -> Vec<PointwiseLayer> {
    use repghost_runtime::kernels::pointwise::Pointwise;
    let (mut h, mut w) = model.stem.out_hw(size, size);
    let mut layers: Vec<(String, &Pointwise, usize)> = Vec::new();
    for (i, b) in model.blocks.iter().enumerate() {
        layers.push((format!("blocks.{i} ghost1"), &b.ghost1.primary, h * w));
        if let Some(dw) = &b.dw {
            (h, w) = dw.out_hw(h, w);
        }
        layers.push((format!("blocks.{i} ghost2"), &b.ghost2.primary, h * w));
        if let repghost_runtime::model::Shortcut::Proj { pw, .. } = &b.shortcut {
            layers.push((format!("blocks.{i} shortcut"), pw, h * w));
        }
    }
    layers.push(("final_conv".into(), &model.final_conv, h * w));
    layers.push(("conv_head".into(), &model.conv_head, 1));
    layers.push(("classifier".into(), &model.classifier, 1));
    layers
        .into_iter()
        .map(|(name, p, m)| {
            let generic =
                clone_pointwise(p).with_kernel(repghost_runtime::kernels::pointwise::Kernel::Generic);
            PointwiseLayer {
                name,
                m,
                k: p.cin,
                n: p.cout,
                packed: time_pointwise(p, m, runs),
                generic: time_pointwise(&generic, m, runs),
            }
        })
        .collect()
}

/// A one-thread SGEMM of `m × k × n` through the gemm crate (`[m, k] × [k, n]`, no
/// epilogue): the machine's reference rate for a GEMM. Returns GFLOP/s of the median run.
pub fn sgemm_rate(m: usize, k: usize, n: usize, runs: usize) -> f64 {
    use repghost_runtime::act::Act;
    use repghost_runtime::kernels::pointwise::{Kernel, Pointwise};
    let w = Rng::new(4).normals(k * n);
    let p = Pointwise::new(&w, n, k, vec![0.0; n], Act::None).with_kernel(Kernel::Generic);
    2.0 * (m * k * n) as f64 / (time_pointwise(&p, m, runs).median * 1e-3) / 1e9
}

fn clone_pointwise(
    p: &repghost_runtime::kernels::pointwise::Pointwise,
) -> repghost_runtime::kernels::pointwise::Pointwise {
    // `[cin][cout]` back to PyTorch's `[cout, cin]`.
    let mut w = vec![0.0; p.cin * p.cout];
    for i in 0..p.cin {
        for o in 0..p.cout {
            w[o * p.cin + i] = p.w[i * p.cout + o];
        }
    }
    repghost_runtime::kernels::pointwise::Pointwise::new(&w, p.cout, p.cin, p.b.clone(), p.act)
}

fn time_pointwise(p: &repghost_runtime::kernels::pointwise::Pointwise, m: usize, runs: usize) -> Timing {
    let ld = repghost_runtime::pixel_stride;
    let (lk, ln) = (ld(p.cin), ld(p.cout));
    let a = Rng::new(5).normals(m * lk);
    let mut c = vec![0f32; m * ln];
    time(runs, || {
        p.run(
            m,
            repghost_runtime::kernels::View::new(&a, lk, 0),
            &mut c,
            ln,
            0,
            false,
            None,
        );
        std::hint::black_box(&c);
    })
}
