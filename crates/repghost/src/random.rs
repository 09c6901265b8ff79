//! Random models and inputs that make parity checks meaningful (used by tests, benchmarks
//! and the demo).
//!
//! Fresh BatchNorms (mean 0, var 1, γ 1, β 0) hide fusion bugs, and arbitrary statistics
//! make a random net's logits nearly independent of its input. So affine parameters are
//! randomized, statistics are calibrated on a train-mode pass, then perturbed.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::config::NetConfig;
use crate::model::Model;

/// The project's one seeded generator, re-exported for the tests and benchmarks that use
/// this module.
pub use repghost_data::Rng;

/// Which BatchNorm tensors to touch.
#[derive(Clone, Copy)]
enum Phase {
    /// Conv and linear weights and biases, PyTorch's default ranges (burn's initializers
    /// draw from a device-wide generator that parallel tests share, so are not repeatable).
    Weights,
    Affine,
    /// Perturb calibrated statistics.
    Perturb,
    /// Set statistics outright (for a single block fed N(0, 1) input).
    Set,
}

/// How one BatchNorm value is redrawn: `(rng, old value) -> new value`.
type Redraw = Box<dyn Fn(&mut Rng, f32) -> f32>;

struct BnRandomizer {
    path: Vec<String>,
    rng: Rng,
    phase: Phase,
}

impl ModuleMapper for BnRandomizer {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let leaf = self.path.last().map(String::as_str).unwrap_or("");
        let rng = &mut self.rng;
        let dims = param.lazy_shape().dims::<D>();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let f: Option<Redraw> = match (self.phase, leaf) {
            (Phase::Weights, "weight") => {
                Some(Box::new(move |r, _| bound * (2.0 * r.uniform() as f32 - 1.0)))
            }
            (Phase::Weights, "bias") => Some(Box::new(|r, _| 0.1 * (2.0 * r.uniform() as f32 - 1.0))),
            (Phase::Affine | Phase::Set, "gamma") => Some(Box::new(|r, _| 0.5 + r.uniform() as f32)),
            (Phase::Affine | Phase::Set, "beta") => Some(Box::new(|r, _| 0.1 * r.normal() as f32)),
            (Phase::Perturb, "running_var") => Some(Box::new(|r, v| v * (0.8 + 0.45 * r.uniform() as f32))),
            (Phase::Set, "running_mean") => Some(Box::new(|r, _| 0.3 * r.normal() as f32)),
            (Phase::Set, "running_var") => Some(Box::new(|r, _| 0.5 + 1.5 * r.uniform() as f32)),
            _ => None,
        };
        let Some(f) = f else { return param };
        param.map(|t| {
            let shape = t.dims();
            let old = crate::reparam::host(&t);
            let new: Vec<f32> = old.iter().map(|&v| f(rng, v)).collect();
            Tensor::from_data(TensorData::new(new, shape), &t.device())
        })
    }
}

fn redraw<M: Module>(m: M, seed: u64, phase: Phase) -> M {
    m.map(&mut BnRandomizer {
        path: Vec::new(),
        rng: Rng::new(seed),
        phase,
    })
}

fn redraw_model(m: Model, seed: u64, phase: Phase) -> Model {
    m.map(&mut BnRandomizer {
        path: Vec::new(),
        rng: Rng::new(seed),
        phase,
    })
}

/// Gives `m` repeatable random weights, and every BatchNorm random affine parameters and
/// statistics (for a single block fed `N(0, 1)` input).
pub fn randomize<M: Module>(m: M, seed: u64) -> M {
    redraw(redraw(m, seed, Phase::Weights), seed ^ 0x5EED, Phase::Set)
}

/// A repeatable `N(0, 1)` batch.
pub fn normal_input(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(rng.normals(n), shape), device)
}

/// A random model in train form whose BatchNorm statistics are calibrated on one train-mode
/// pass over `N(0, 1)` images of `hw × hw`, then perturbed. Returned in inference mode.
pub fn calibrated(cfg: &NetConfig, seed: u64, hw: usize) -> Model {
    let ad = Device::flex().autodiff();
    let cal = cfg.clone().with_bn_momentum(1.0);
    let model = Model::new(&cal, &ad);
    let mut model = redraw_model(
        redraw_model(model, seed, Phase::Weights),
        seed ^ 0xAFF1,
        Phase::Affine,
    );
    let _ = model.forward(normal_input([8, cfg.in_chans, hw, hw], seed ^ 0xCA1, &ad));
    model = model.valid();
    redraw_model(model, seed ^ 0xABCD, Phase::Perturb)
}

struct CastF64;

impl ModuleMapper for CastF64 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F64))
    }
}

/// The same module computing in f64: separates the arithmetic of a fold from the rounding
/// of an f32 forward pass.
pub fn to_f64<M: Module>(m: M) -> M {
    m.map(&mut CastF64)
}

/// [`to_f64`] for a [`Model`].
pub fn model_to_f64(m: Model) -> Model {
    m.map(&mut CastF64)
}
