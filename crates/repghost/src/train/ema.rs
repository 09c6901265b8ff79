//! Model EMA (timm `ModelEmaV2`, as the official recipe uses it): after every update,
//! `ema = d · ema + (1 − d) · model` for every parameter *and* BatchNorm running statistic.
//!
//! The configured decay (0.9999) suits a 375k-step ImageNet run, but in a run of a few
//! hundred steps the average would still be mostly the random initialisation. The decay used
//! at step `t` of a run of `T` steps is therefore
//! `min(decay, 1 − 10 / T, (1 + t) / (10 + t))`: the horizon `1 / (1 − d)` never exceeds a
//! tenth of the run, and the first steps are not weighed against the initial weights (the
//! warm-up of TensorFlow's `ExponentialMovingAverage(num_updates)`).

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::model::Model;

pub struct Ema {
    /// The averaged model, on the non-autodiff device.
    pub model: Model,
    pub decay: f64,
}

/// The decay applied after update `step` (0-based) of a run of `total_steps`.
pub fn effective_decay(decay: f64, step: usize, total_steps: usize) -> f64 {
    let horizon = 1.0 - 10.0 / total_steps.max(1) as f64;
    let warm = (1.0 + step as f64) / (10.0 + step as f64);
    decay.min(horizon).min(warm).max(0.0)
}

impl Ema {
    pub fn new(model: &Model, decay: f64) -> Self {
        Ema {
            model: model.valid(),
            decay,
        }
    }

    pub fn update(&mut self, model: &Model, step: usize, total_steps: usize) {
        let d = effective_decay(self.decay, step, total_steps);
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        let mut blend = Blend {
            values: c.0.into_iter(),
            d,
        };
        self.model = self.model.clone().map(&mut blend);
    }
}

/// Every float tensor of a model in visit order, flattened, detached from autodiff.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

struct Blend {
    values: std::vec::IntoIter<Tensor<1>>,
    d: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let src = self.values.next().expect("EMA and model have the same structure");
        let d = self.d;
        param.map(|e| {
            let dims = e.dims();
            e.mul_scalar(d).add(src.reshape(dims).mul_scalar(1.0 - d))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_adapts_to_short_runs() {
        // A long run keeps the configured decay once warmed up.
        assert_eq!(effective_decay(0.9999, 1_000_000, 375_000), 0.9999);
        // 94 steps: horizon about 9 steps.
        assert!((effective_decay(0.9999, 80, 94) - (1.0 - 10.0 / 94.0)).abs() < 1e-12);
        // First step: mostly the model.
        assert!((effective_decay(0.9999, 0, 10_000) - 0.1).abs() < 1e-12);
    }
}
