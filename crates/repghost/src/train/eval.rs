//! Evaluation of an inference-form model on a labelled image source, by burn's forward pass
//! or by any other [`Logits`] engine (such as the deploy runtime).

use std::sync::Arc;

use repghost_data::dataset::{batches, Dataset};
use repghost_data::Preprocess;

use crate::engine::{BurnLogits, Logits};
use crate::error::{Error, Result};
use crate::metrics::{Accumulator, Report};
use crate::model::Model;

const EVAL_BATCH: usize = 128;

/// Top-1/top-5/loss of an inference-form model on `indices` of `ds`, by burn's forward pass.
pub fn evaluate(model: &Model, ds: Arc<dyn Dataset>, indices: &[usize], pre: &Preprocess) -> Result<Report> {
    let mut burn = BurnLogits::new(model);
    evaluate_with(&mut burn, ds, indices, pre)
}

/// [`evaluate`] with the logits of `engine`; an unreadable sample is an error.
pub fn evaluate_with(
    engine: &mut dyn Logits,
    ds: Arc<dyn Dataset>,
    indices: &[usize],
    pre: &Preprocess,
) -> Result<Report> {
    let e = evaluate_streaming(engine, ds, indices, pre, EVAL_BATCH, &mut |_, _| {})?;
    match e.failed.into_iter().next() {
        Some((name, msg)) => Err(Error::Data { name, msg }),
        None => Ok(e.report),
    }
}

/// The outcome of [`evaluate_streaming`].
pub struct Evaluation {
    pub report: Report,
    /// Samples that could not be read, with the reason: left out of the report.
    pub failed: Vec<(String, String)>,
}

/// Evaluates `indices` of `ds` in batches of `batch` (decoded on all cores while `engine`
/// computes), calling `progress(samples seen, metrics so far)` after each batch. Samples
/// that cannot be read are left out and listed.
pub fn evaluate_streaming(
    engine: &mut dyn Logits,
    ds: Arc<dyn Dataset>,
    indices: &[usize],
    pre: &Preprocess,
    batch: usize,
    progress: &mut dyn FnMut(usize, &Accumulator),
) -> Result<Evaluation> {
    let classes = ds.classes();
    let mut acc = Accumulator::new(classes.len());
    let mut failed = Vec::new();
    let mut seen = 0;
    for b in batches(ds.clone(), indices.to_vec(), pre.clone(), batch.max(1), 3) {
        seen += b.indices.len() + b.failed.len();
        failed.extend(b.failed);
        if !b.labels.is_empty() {
            let logits = engine.logits(b.inputs, b.shape)?;
            acc.update(&logits, &b.labels);
        }
        progress(seen, &acc);
    }
    Ok(Evaluation {
        report: acc.report(&classes),
        failed,
    })
}
