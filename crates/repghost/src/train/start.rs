//! How a run starts: whether its folder may take it, and the weights it may start from.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::{self, Form, LoadOptions};

/// Whether `out` may take a new run: not where a run is already kept (`last.ckpt`), unless
/// `overwrite`, in which case [`super::clear_run`] removes that run's files (and nothing else)
/// once the new run's configuration is known to be valid.
pub fn check_new_run(out: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && out.join("last.ckpt").exists() {
        return Err(Error::Invalid(format!(
            "{}: holds a run already (last.ckpt); pass --resume to continue it, --overwrite to replace its run files, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// Train-form weights to start a run from (`--init`), with the name of their variant; the
/// classifier is replaced by a fresh one when the weights have another number of classes.
/// Weights whose BatchNorms are folded cannot be trained and are an error naming the file.
pub fn load_init(path: &Path, model: Option<&str>, classes: usize) -> Result<(String, Model)> {
    let opts = LoadOptions {
        model: model.map(str::to_string),
        ema: false,
    };
    let loaded = weights::load(path, &opts, &burn::tensor::Device::flex())?;
    if loaded.form != Form::Train {
        return Err(Error::Invalid(format!(
            "{}: {} form weights cannot be trained (BatchNorm is folded); give train-form weights",
            path.display(),
            loaded.form.as_str()
        )));
    }
    let mut m = loaded.model;
    if m.config().num_classes != classes {
        m = m.reset_classifier(classes);
    }
    Ok((loaded.name, m))
}
