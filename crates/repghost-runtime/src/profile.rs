//! Optional per-layer-type timing (`Workspace::profile`), for finding where the time goes, and
//! each 1×1 convolution's kernel timed alone (`Model::time_pointwise_layers`).

use std::time::Instant;

use crate::act::Act;
use crate::exec::ld;
use crate::kernels::pointwise::{Kernel, Pointwise};
use crate::kernels::qpointwise::QPointwise;
use crate::kernels::View;
use crate::model::{Model, Shortcut};
use crate::quant::engine::ldq;
use repghost_plan::plan::Shortcut as PlanShortcut;

/// Milliseconds spent per kind of layer since the last reset.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub entries: Vec<(&'static str, f64, u64)>,
}

impl Profile {
    pub fn add(&mut self, kind: &'static str, ms: f64) {
        self.add_n(kind, ms, 1);
    }

    fn add_n(&mut self, kind: &'static str, ms: f64, n: u64) {
        match self.entries.iter_mut().find(|e| e.0 == kind) {
            Some(e) => {
                e.1 += ms;
                e.2 += n;
            }
            None => self.entries.push((kind, ms, n)),
        }
    }

    /// Adds `other`'s times and counts to these (the shares of a batch's threads).
    pub fn merge(&mut self, other: &Profile) {
        for &(kind, ms, n) in &other.entries {
            self.add_n(kind, ms, n);
        }
    }
}

/// Runs `f`, charging its time to `kind` when profiling is on.
#[inline]
pub fn timed<R>(p: &mut Option<Profile>, kind: &'static str, f: impl FnOnce() -> R) -> R {
    match p {
        None => f(),
        Some(p) => {
            let t = Instant::now();
            let r = f();
            p.add(kind, t.elapsed().as_secs_f64() * 1e3);
            r
        }
    }
}

/// One 1×1 convolution of a model timed alone, with its data hot in cache: the kernel's rate,
/// not the layer's share of a forward pass (which [`Profile`] gives).
#[derive(Clone, Debug, PartialEq)]
pub struct PointwiseTiming<T> {
    /// Where it sits: `blocks.3 ghost1`, `final_conv`, …
    pub name: String,
    /// Pixels (rows of the GEMM), input and output channels.
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// With the packed kernel this CPU runs.
    pub packed: T,
    /// Through the gemm crate, with a separate epilogue pass.
    pub generic: T,
    /// With the INT8 kernel, for the quantized layers of an INT8 model (u8 in and out,
    /// requantizing store); `None` for float layers.
    pub int8: Option<T>,
}

impl<T> PointwiseTiming<T> {
    pub fn flop(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

impl Model {
    /// Every 1×1 convolution at batch 1 on a `size × size` input, each measured by `time`
    /// (which calls the closure it is given as often as it likes) with the packed kernel and
    /// with the gemm crate, and for an INT8 model with its INT8 kernel.
    pub fn time_pointwise_layers<T>(
        &self,
        size: usize,
        mut time: impl FnMut(&mut dyn FnMut()) -> T,
    ) -> Vec<PointwiseTiming<T>> {
        let (mut h, mut w) = self.stem.out_hw(size, size);
        let mut layers: Vec<(String, &Pointwise, usize)> = Vec::new();
        let plan = &self.plan;
        for (b, pb) in self.blocks.iter().zip(&plan.blocks) {
            layers.push((pb.ghost1.primary.key.clone(), &b.ghost1.primary, h * w));
            if let Some(dw) = &b.dw {
                (h, w) = dw.out_hw(h, w);
            }
            layers.push((pb.ghost2.primary.key.clone(), &b.ghost2.primary, h * w));
            if let (Shortcut::Proj { pw, .. }, PlanShortcut::Projection { pw: ppw, .. }) =
                (&b.shortcut, &pb.shortcut)
            {
                layers.push((ppw.key.clone(), pw, h * w));
            }
        }
        layers.push((plan.final_conv.key.clone(), &self.final_conv, h * w));
        layers.push((plan.conv_head.key.clone(), &self.conv_head, 1));
        layers.push((plan.classifier.key.clone(), &self.classifier, 1));
        // The INT8 layers come in the same order, up to the final conv (the head is float).
        let int8 = self
            .quant
            .as_ref()
            .map(|q| q.pointwise_layers())
            .unwrap_or_default();
        let int8 = int8.into_iter().map(Some).chain(std::iter::repeat(None));
        layers
            .into_iter()
            .zip(int8)
            .map(|((name, p, m), q)| {
                if let Some(q) = q {
                    assert_eq!((q.cin(), q.cout()), (p.cin(), p.cout()), "int8 layer of {name}");
                }
                let generic = p.copy_with_kernel(Kernel::Generic);
                PointwiseTiming {
                    name,
                    m,
                    k: p.cin(),
                    n: p.cout(),
                    packed: time_layer(p, m, &mut time),
                    generic: time_layer(&generic, m, &mut time),
                    int8: q.map(|q| time_int8_layer(q, m, &mut time)),
                }
            })
            .collect()
    }
}

/// A one-thread SGEMM of `m × k × n` through the gemm crate (`[m, k] × [k, n]`, no epilogue),
/// measured by `time`: the machine's reference rate for a GEMM.
pub fn time_sgemm<T>(m: usize, k: usize, n: usize, mut time: impl FnMut(&mut dyn FnMut()) -> T) -> T {
    let w: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let p = Pointwise::new(&w, n, k, vec![0.0; n], Act::None)
        .expect("a well-formed layer")
        .copy_with_kernel(Kernel::Generic);
    time_layer(&p, m, &mut time)
}

fn time_int8_layer<T>(q: &QPointwise, m: usize, time: &mut impl FnMut(&mut dyn FnMut()) -> T) -> T {
    let (lk, ln) = (ldq(q.cin()), ldq(q.cout()));
    let a: Vec<u8> = (0..m * lk).map(|i| (i % 251) as u8).collect();
    let mut c = vec![0u8; m * ln];
    time(&mut || {
        q.run(m, &a, lk, &mut c, ln, None);
        std::hint::black_box(&c);
    })
}

fn time_layer<T>(p: &Pointwise, m: usize, time: &mut impl FnMut(&mut dyn FnMut()) -> T) -> T {
    let (lk, ln) = (ld(p.cin()), ld(p.cout()));
    let a: Vec<f32> = (0..m * lk).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    let mut c = vec![0f32; m * ln];
    time(&mut || {
        p.run(m, View::new(&a, lk, 0), &mut c, ln, 0, false, None);
        std::hint::black_box(&c);
    })
}
