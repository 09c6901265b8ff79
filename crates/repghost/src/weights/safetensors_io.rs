//! The native format: safetensors with reference key names and metadata naming the model,
//! its configuration and its form, so that a file loads without `--model`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{Form, HostTensor, StateDict};
use crate::config::NetConfig;
use crate::error::{Error, Result};
use repghost_data::Preprocess;

/// What our metadata records. Files written by timm have none of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub model: String,
    pub config: NetConfig,
    pub form: Form,
    /// How images were turned into input when the model was trained (absent: ImageNet's).
    pub preprocess: Option<Preprocess>,
}

pub fn read(path: &Path, bytes: &[u8]) -> Result<(StateDict, Option<Meta>)> {
    let fmt = |m: String| Error::format(path, m);
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| fmt(format!("not a valid safetensors file ({e})")))?;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| fmt(format!("not a valid safetensors file ({e})")))?;
    let meta = match header.metadata() {
        Some(m) if m.get("format").map(String::as_str) == Some("repghost") => {
            Some(parse_meta(m).map_err(fmt)?)
        }
        _ => None,
    };
    let mut sd = StateDict::new();
    if header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("precision"))
        .map(String::as_str)
        == Some(repghost_runtime::quant::INT8)
    {
        for (name, shape, data) in
            repghost_runtime::quant::dequantize(bytes).map_err(|e| fmt(e.to_string()))?
        {
            sd.insert(name, HostTensor { shape, data });
        }
        return Ok((sd, meta));
    }
    for (name, view) in st.tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let data = convert(&view).map_err(|e| fmt(format!("tensor '{name}': {e}")))?;
        sd.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((sd, meta))
}

fn parse_meta(m: &HashMap<String, String>) -> Result<Meta, String> {
    let get = |k: &str| m.get(k).ok_or_else(|| format!("metadata lacks '{k}'"));
    let config: NetConfig =
        serde_json::from_str(get("config")?).map_err(|e| format!("metadata 'config' is not valid ({e})"))?;
    let form = match get("form")?.as_str() {
        "train" => Form::Train,
        "fused" => Form::Fused,
        "deploy" => Form::Deploy,
        f => return Err(format!("metadata names unknown form '{f}'")),
    };
    let preprocess = match m.get("preprocess") {
        Some(p) => {
            Some(serde_json::from_str(p).map_err(|e| format!("metadata 'preprocess' is not valid ({e})"))?)
        }
        None => None,
    };
    Ok(Meta {
        model: get("model")?.clone(),
        config,
        form,
        preprocess,
    })
}

fn convert(view: &TensorView) -> Result<Vec<f32>, String> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => return Err(format!("unsupported dtype {d:?}")),
    })
}

/// How a native file stores its float tensors; models compute in f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    #[default]
    F32,
    /// IEEE half precision: half the size, every value rounded to 11 significant bits.
    F16,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
        }
    }
}

/// Serializes a state dict with our metadata, little-endian, its tensors stored as `storage`
/// says.
pub fn to_bytes(sd: &StateDict, meta: &Meta, storage: Storage) -> Result<Vec<u8>> {
    serialize(sd, Some(metadata(meta)?), storage)
}

/// Serializes a bare state dict, as timm writes one (no metadata, f32).
pub fn to_bytes_bare(sd: &StateDict) -> Result<Vec<u8>> {
    serialize(sd, None, Storage::F32)
}

fn metadata(meta: &Meta) -> Result<HashMap<String, String>> {
    let mut md = HashMap::new();
    md.insert("format".to_string(), "repghost".to_string());
    md.insert("model".to_string(), meta.model.clone());
    md.insert("form".to_string(), meta.form.as_str().to_string());
    md.insert("width".to_string(), meta.config.width.to_string());
    md.insert("num_classes".to_string(), meta.config.num_classes.to_string());
    md.insert("in_chans".to_string(), meta.config.in_chans.to_string());
    md.insert(
        "config".to_string(),
        serde_json::to_string(&meta.config).map_err(|e| Error::Invalid(e.to_string()))?,
    );
    if let Some(p) = &meta.preprocess {
        md.insert(
            "preprocess".to_string(),
            serde_json::to_string(p).map_err(|e| Error::Invalid(e.to_string()))?,
        );
    }
    Ok(md)
}

/// The little-endian bytes of `data` stored as `storage`; a finite value beyond f16's range
/// is refused rather than stored as infinity.
fn encode(key: &str, data: &[f32], storage: Storage) -> Result<Vec<u8>> {
    match storage {
        Storage::F32 => Ok(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        Storage::F16 => {
            let mut out = Vec::with_capacity(2 * data.len());
            for &v in data {
                let h = half::f16::from_f32(v);
                if v.is_finite() && h.is_infinite() {
                    return Err(Error::Invalid(format!(
                        "tensor '{key}' holds {v}, beyond the range of f16 (±65504); store it as f32"
                    )));
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
            Ok(out)
        }
    }
}

pub(crate) fn serialize(
    sd: &StateDict,
    md: Option<HashMap<String, String>>,
    storage: Storage,
) -> Result<Vec<u8>> {
    let dtype = match storage {
        Storage::F32 => Dtype::F32,
        Storage::F16 => Dtype::F16,
    };
    let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = sd
        .iter()
        .map(|(k, t)| Ok((k.clone(), encode(k, &t.data, storage)?, t.shape.clone())))
        .collect::<Result<_>>()?;
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(k, b, s)| {
            Ok((
                k.clone(),
                TensorView::new(dtype, s.clone(), b).map_err(|e| Error::Invalid(e.to_string()))?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, md).map_err(|e| Error::Invalid(e.to_string()))
}
