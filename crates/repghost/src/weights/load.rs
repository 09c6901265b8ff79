//! Loading any supported weight file into a [`Model`], and saving the native format.

use std::path::Path;

use burn::tensor::Device;

use super::detect::{candidates, form_of, io_of};
use super::keys::strip_prefix;
use super::safetensors_io::{self, Meta, Storage};
use super::{apply_state_dict, state_dict, torch, Form, StateDict};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::variants::resolve;
use repghost_data::Preprocess;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Model name; without it the file's metadata or its shapes decide.
    pub model: Option<String>,
    /// Take `state_dict_ema` of a training checkpoint.
    pub ema: bool,
}

#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub name: String,
    pub form: Form,
    /// Where the weights came from inside the file.
    pub source: String,
    pub has_ema: bool,
    /// The preprocessing recorded with native weights; `None` for imported checkpoints.
    pub preprocess: Option<Preprocess>,
    /// An INT8 file (`repghost quantize`): `model` holds its dequantized weights, and the
    /// runtime runs its INT8 kernels from the file.
    pub int8: bool,
}

/// Reads a native or timm `.safetensors`, an official `.pth`/`.pth.tar` training checkpoint,
/// a plain state dict or the official `convert.py` output.
pub fn load(path: &Path, opts: &LoadOptions, device: &Device) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_bytes(path, &bytes, opts, device)
}

/// [`load`] on bytes already in memory; `path` only names the source in messages.
pub fn load_bytes(path: &Path, bytes: &[u8], opts: &LoadOptions, device: &Device) -> Result<Loaded> {
    if bytes.is_empty() {
        return Err(Error::format(path, "file is empty"));
    }
    let (raw, meta, source, has_ema, arch) = if torch::is_zip(bytes) {
        let f = torch::read(path, bytes, opts.ema)?;
        (f.tensors, None, f.source, f.has_ema, f.arch)
    } else if bytes.len() > 8 && bytes[8] == b'{' {
        if opts.ema {
            return Err(Error::format(
                path,
                "--ema: a safetensors file holds one set of weights",
            ));
        }
        let (sd, meta) = safetensors_io::read(path, bytes)?;
        (sd, meta, "safetensors".to_string(), false, None)
    } else if bytes.starts_with(&[0x80, 0x02]) {
        return Err(Error::format(
            path,
            "legacy (pre-1.6) torch serialization; re-save it with a current torch.save",
        ));
    } else {
        return Err(Error::format(
            path,
            "neither a torch zip checkpoint nor a safetensors file",
        ));
    };
    let sd: StateDict = raw
        .into_iter()
        .map(|(k, v)| (strip_prefix(&k).to_string(), v))
        .collect();
    if let Some((key, _)) = sd.iter().find(|(_, t)| t.data.iter().any(|v| !v.is_finite())) {
        return Err(Error::NonFinite {
            path: path.into(),
            key: key.clone(),
        });
    }

    let form = meta.as_ref().map_or_else(|| form_of(&sd), |m| m.form);
    // The name the file records, where it records one (module prefix dropped).
    let named = arch.as_deref().map(|a| a.rsplit('.').next().unwrap_or(a));
    let io = || {
        io_of(&sd).ok_or_else(|| {
            Error::format(
                path,
                "no 'classifier.weight' [classes, 1280] or 'conv_stem.weight' [c, in, 3, 3]",
            )
        })
    };
    let (name, cfg) = match (opts.model.as_deref().or(named), &meta) {
        (Some(name), _) => {
            let (name, v) = resolve(name)?;
            let (nc, ic) = io()?;
            let mut cfg = v.config(nc).with_in_chans(ic);
            if let Some(m) = &meta {
                cfg.stem_stride = m.config.stem_stride;
            }
            (name, cfg)
        }
        (None, Some(m)) => (m.model.clone(), m.config.clone()),
        (None, None) => {
            let found = candidates(&sd, form);
            match found.as_slice() {
                [v] => {
                    let (nc, ic) = io()?;
                    (v.name.to_string(), v.config(nc).with_in_chans(ic))
                }
                [] => {
                    return Err(Error::Ambiguous {
                        path: path.into(),
                        msg: format!(
                            "no known variant has these {} tensors ({} form); name one with --model",
                            sd.len(),
                            form.as_str()
                        ),
                    })
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|v| v.name).collect();
                    return Err(Error::Ambiguous {
                        path: path.into(),
                        msg: format!(
                            "the tensors fit {} alike and the file does not name its model; choose with --model",
                            names.join(" and ")
                        ),
                    });
                }
            }
        }
    };
    let skeleton = Model::with_form(&cfg, form, device);
    let model = apply_state_dict(skeleton, &sd, form).map_err(|p| Error::Mismatch {
        path: path.into(),
        model: format!("{name} ({} form)", form.as_str()),
        details: p.join("; "),
    })?;
    let preprocess = meta.and_then(|m| m.preprocess);
    let int8 = source == "safetensors" && repghost_runtime::quant::is_int8(bytes);
    Ok(Loaded {
        model,
        name,
        form,
        source,
        has_ema,
        preprocess,
        int8,
    })
}

/// Writes `model` as native safetensors (crash-safe: temp file + rename), recording the
/// preprocessing its inputs need, its tensors stored as `storage` says.
pub fn save(
    model: &Model,
    name: &str,
    form: Form,
    preprocess: Option<&Preprocess>,
    storage: Storage,
    path: &Path,
) -> Result<()> {
    let meta = Meta {
        model: name.to_string(),
        config: model.config().clone(),
        form,
        preprocess: preprocess.cloned(),
    };
    let bytes = safetensors_io::to_bytes(&state_dict(model, form), &meta, storage)?;
    crate::fsutil::write_atomic(path, &bytes)
}
