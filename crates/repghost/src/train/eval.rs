//! Evaluation of an inference-form model on a labelled image source.

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use repghost_data::dataset::{batches, Dataset};
use repghost_data::Preprocess;

use crate::error::{Error, Result};
use crate::metrics::{Accumulator, Report};
use crate::model::Model;

const EVAL_BATCH: usize = 128;

/// Top-1/top-5/loss of an inference-form model on `indices` of `ds`.
pub fn evaluate(model: &Model, ds: Arc<dyn Dataset>, indices: &[usize], pre: &Preprocess) -> Result<Report> {
    let device = first_device(model);
    let mut acc = Accumulator::new(model.config().num_classes);
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
        let x = Tensor::<4>::from_data(TensorData::new(batch.inputs, batch.shape), &device);
        let logits = crate::reparam::host(&model.forward(x));
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
