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

/// Serializes a state dict with our metadata (f32, little-endian).
pub fn to_bytes(sd: &StateDict, meta: &Meta) -> Result<Vec<u8>> {
    serialize(sd, Some(metadata(meta)?))
}

/// Serializes a bare state dict, as timm writes one (no metadata).
pub fn to_bytes_bare(sd: &StateDict) -> Result<Vec<u8>> {
    serialize(sd, None)
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

pub(crate) fn serialize(sd: &StateDict, md: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = sd
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(k, b, s)| {
            Ok((
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::Invalid(e.to_string()))?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, md).map_err(|e| Error::Invalid(e.to_string()))
}
