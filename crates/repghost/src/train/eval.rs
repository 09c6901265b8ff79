//! Evaluation of an inference-form model on a labelled image source, by burn's forward pass
//! or by any other [`Logits`] engine (the CLI plugs in the deploy runtime).

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use repghost_data::dataset::{batches, Dataset};
use repghost_data::Preprocess;

use crate::error::{Error, Result};
use crate::metrics::{Accumulator, Report};
use crate::model::Model;

const EVAL_BATCH: usize = 128;

/// Logits `[n, classes]` of an `[n, c, h, w]` batch, computed by one model.
pub trait Logits {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>>;
}

/// Makes the [`Logits`] of an inference-form model (train or deploy form). The trainer calls
/// it for the model and its EMA after every epoch, and for the deployed model at the end.
pub type Engine = Arc<dyn Fn(&Model) -> Result<Box<dyn Logits>> + Send + Sync>;

/// burn's forward pass on the model's device.
struct Burn {
    model: Model,
    device: Device,
}

impl Logits for Burn {
    fn logits(&mut self, inputs: Vec<f32>, shape: [usize; 4]) -> Result<Vec<f32>> {
        let x = Tensor::<4>::from_data(TensorData::new(inputs, shape), &self.device);
        Ok(crate::reparam::host(&self.model.forward(x)))
    }
}

/// Top-1/top-5/loss of an inference-form model on `indices` of `ds`, by burn's forward pass.
pub fn evaluate(model: &Model, ds: Arc<dyn Dataset>, indices: &[usize], pre: &Preprocess) -> Result<Report> {
    let mut burn = Burn {
        model: model.clone(),
        device: first_device(model),
    };
    evaluate_with(&mut burn, model.config().num_classes, ds, indices, pre)
}

/// [`evaluate`] with the logits of `engine`, for a model with `num_classes` outputs.
pub fn evaluate_with(
    engine: &mut dyn Logits,
    num_classes: usize,
    ds: Arc<dyn Dataset>,
    indices: &[usize],
    pre: &Preprocess,
) -> Result<Report> {
    let mut acc = Accumulator::new(num_classes);
    for batch in batches(ds.clone(), indices.to_vec(), pre.clone(), EVAL_BATCH, 2) {
        if let Some((name, msg)) = batch.failed.first() {
            return Err(Error::Data {
                name: name.clone(),
                msg: msg.clone(),
            });
        }
        if batch.labels.is_empty() {
            continue;
        }
        let logits = engine.logits(batch.inputs, batch.shape)?;
        acc.update(&logits, &batch.labels);
    }
    Ok(acc.report(&ds.classes()))
}

fn first_device(model: &Model) -> Device {
    struct D(Option<Device>);
    impl burn::module::ModuleVisitor for D {
        fn visit_float<const N: usize>(&mut self, p: &Param<Tensor<N>>) {
            self.0.get_or_insert_with(|| p.val().device());
        }
    }
    let mut d = D(None);
    model.visit(&mut d);
    d.0.unwrap_or_else(Device::flex)
}
