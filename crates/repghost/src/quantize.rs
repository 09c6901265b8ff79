//! Static post-training quantization of a model (`repghost quantize`): its deploy form
//! calibrated on images of a dataset by the runtime's [`Calibrator`], written as an INT8 file
//! that the runtime runs with INT8 kernels.

use std::sync::Arc;

use repghost_data::dataset::{batches, Dataset};
use repghost_data::Preprocess;
use repghost_runtime::quant::{Calibrator, PointSqnr, Simulator};
use repghost_runtime::Layout;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::safetensors_io::{self, Meta, Storage};
use crate::weights::{state_dict, Form, Loaded};

/// The deploy-form bytes of loaded weights (train-form weights are folded first), with the
/// preprocessing they record, as `repghost convert` would write them.
pub fn deploy_bytes(loaded: &Loaded) -> Result<Vec<u8>> {
    let model = loaded.model.valid();
    let deploy = if loaded.form == Form::Deploy {
        model
    } else {
        model.reparameterize()
    };
    deploy_bytes_of(&deploy, &loaded.name, loaded.preprocess.as_ref())
}

/// The bytes of a deploy-form `model` as a native file named `name`.
pub fn deploy_bytes_of(deploy: &Model, name: &str, preprocess: Option<&Preprocess>) -> Result<Vec<u8>> {
    let meta = Meta {
        model: name.to_string(),
        config: deploy.config().clone(),
        form: Form::Deploy,
        preprocess: preprocess.cloned(),
    };
    safetensors_io::to_bytes(&state_dict(deploy, Form::Deploy), &meta, Storage::F32)
}

/// The INT8 runtime model of a deploy-form `model`, calibrated on `batch` (`[n, c, h, w]`,
/// NCHW) with the default options: for timing with random weights and inputs.
pub fn int8_runtime(
    deploy: &Model,
    name: &str,
    batch: &[f32],
    [n, _, h, w]: [usize; 4],
) -> Result<repghost_runtime::Model> {
    let mut cal = Calibrator::from_bytes(&deploy_bytes_of(deploy, name, None)?)?;
    cal.observe(batch, n, h, w, Layout::Nchw)?;
    let bytes = cal.quantize(&repghost_runtime::quant::QuantizeOptions::default())?;
    Ok(repghost_runtime::Model::from_bytes(&bytes)?)
}

/// `n` images of `ds` spread evenly over it (every `len / n`-th), for calibration.
pub fn spread(ds: &dyn Dataset, n: usize) -> Vec<usize> {
    let len = ds.len();
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

/// The calibrator of `deploy` (deploy-form bytes) after observing `indices` of `ds`,
/// preprocessed by `pre`; `progress(images seen)` after each batch. Images that cannot be
/// read are skipped and counted in the second value.
pub fn calibrate(
    deploy: &[u8],
    ds: Arc<dyn Dataset>,
    indices: &[usize],
    pre: &Preprocess,
    progress: &mut dyn FnMut(usize),
) -> Result<(Calibrator, usize)> {
    let mut cal = Calibrator::from_bytes(deploy)?;
    let (mut seen, mut failed) = (0, 0);
    for b in batches(ds, indices.to_vec(), pre.clone(), 32, 3) {
        seen += b.indices.len() + b.failed.len();
        failed += b.failed.len();
        if !b.indices.is_empty() {
            let [n, _, h, w] = b.shape;
            cal.observe(&b.inputs, n, h, w, Layout::Nchw)?;
        }
        progress(seen);
    }
    if cal.images() == 0 {
        return Err(Error::Invalid("no calibration image could be read".into()));
    }
    Ok((cal, failed))
}

/// The SQNR at every quantization point of `int8` against the float `deploy` file it was
/// made from ([`Simulator::sqnr`]), on `indices` of `ds` preprocessed by `pre`.
pub fn sqnr(
    deploy: &[u8],
    int8: &[u8],
    ds: Arc<dyn Dataset>,
    indices: &[usize],
    pre: &Preprocess,
) -> Result<Vec<PointSqnr>> {
    let float = Calibrator::from_bytes(deploy)?;
    let sim = Simulator::from_bytes(int8)?;
    let (mut images, mut n, mut hw) = (Vec::new(), 0, (0, 0));
    for b in batches(ds, indices.to_vec(), pre.clone(), 32, 3) {
        if !b.indices.is_empty() {
            let [k, _, h, w] = b.shape;
            images.extend_from_slice(&b.inputs);
            (n, hw) = (n + k, (h, w));
        }
    }
    if n == 0 {
        return Err(Error::Invalid("no image could be read".into()));
    }
    Ok(sim.sqnr(&float, &images, n, hw.0, hw.1, Layout::Nchw)?)
}
