//! PyTorch checkpoints in the zip format of `torch.save` (torch ≥ 1.6): `*/data.pkl` plus
//! one record per storage under `*/data/`. Official training checkpoints (`.pth.tar`) keep
//! the weights under `state_dict` / `state_dict_ema`; plain state dicts hold them at the top.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use half::{bf16, f16};

use super::pickle::{self, DType, TensorRef, Value};
use super::{HostTensor, StateDict};
use crate::error::{Error, Result};

/// A storage record may not claim more than this many bytes (64 GiB): refused before any
/// allocation, whatever the zip directory says.
const MAX_RECORD: u64 = 64 << 30;
const MAX_PICKLE: u64 = 1 << 30;

/// What a torch file held besides the chosen weights.
#[derive(Debug)]
pub struct TorchFile {
    pub tensors: StateDict,
    /// Where in the file the weights came from (`state_dict_ema`, `state_dict`, top level…).
    pub source: String,
    pub has_ema: bool,
    /// The model name a training checkpoint records (timm's saver: top-level `arch`, e.g.
    /// `repghostnet_wo_0_5x` or `repghost.repghostnet_wo_0_5x`); read as a string only.
    pub arch: Option<String>,
}

pub fn is_zip(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
}

/// Reads the weights of a torch zip checkpoint. `ema` selects `state_dict_ema`.
pub fn read(path: &Path, bytes: &[u8], ema: bool) -> Result<TorchFile> {
    let fmt = |m: String| Error::format(path, m);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        fmt(format!(
            "not a readable torch zip archive, truncated or corrupt ({e})"
        ))
    })?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| fmt("zip archive without */data.pkl: not a torch checkpoint".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = read_entry(&mut zip, &pkl_name, MAX_PICKLE).map_err(&fmt)?;
    let root = pickle::parse(&pkl).map_err(&fmt)?;

    let has_ema = root.get("state_dict_ema").is_some();
    let (source, dict) = if ema {
        match root.get("state_dict_ema") {
            Some(d) => ("state_dict_ema", d),
            None => return Err(fmt("--ema: the file holds no 'state_dict_ema'".into())),
        }
    } else if let Some(d) = root.get("state_dict") {
        ("state_dict", d)
    } else if let Some(d) = root.get("model").filter(|d| matches!(d, Value::Dict(_))) {
        ("model", d)
    } else {
        ("top level", &root)
    };
    let Value::Dict(items) = dict else {
        return Err(fmt(format!("'{source}' is not a dict of tensors")));
    };

    let mut records: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = StateDict::new();
    for (k, v) in items {
        let (Some(key), Value::Tensor(t)) = (k.as_str(), v) else {
            continue;
        };
        if key.ends_with("num_batches_tracked") {
            continue;
        }
        if !records.contains_key(&t.storage) {
            let rec = read_entry(&mut zip, &format!("{prefix}data/{}", t.storage), MAX_RECORD)
                .map_err(|e| fmt(format!("tensor '{key}': {e}")))?;
            records.insert(t.storage.clone(), rec);
        }
        let data = gather(&records[&t.storage], t).map_err(|e| fmt(format!("tensor '{key}': {e}")))?;
        tensors.insert(
            key.to_string(),
            HostTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    if tensors.is_empty() {
        return Err(fmt(format!("no float tensors found under {source}")));
    }
    let arch = root.get("arch").and_then(Value::as_str).map(str::to_string);
    Ok(TorchFile {
        tensors,
        arch,
        source: source.to_string(),
        has_ema,
    })
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    cap: u64,
) -> Result<Vec<u8>, String> {
    let mut f = zip.by_name(name).map_err(|e| format!("record {name}: {e}"))?;
    if f.size() > cap {
        return Err(format!("record {name} declares {} bytes", f.size()));
    }
    // Deflate cannot expand more than ~1032:1, and a stored record is as long as its data: a
    // larger declared size is a lie, refused before any allocation (a zip bomb or a forged
    // header must not reserve gigabytes).
    let stored = f.compression() == zip::CompressionMethod::Stored;
    let bound = if stored {
        f.compressed_size()
    } else {
        f.compressed_size().saturating_mul(1100) + 1024
    };
    if f.size() > bound {
        return Err(format!(
            "record {name} declares {} bytes from {} compressed",
            f.size(),
            f.compressed_size()
        ));
    }
    let mut buf = Vec::with_capacity(f.size().min(64 << 20) as usize);
    f.by_ref()
        .take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| format!("record {name} is corrupt or truncated ({e})"))?;
    if buf.len() as u64 != f.size() {
        return Err(format!("record {name} is truncated"));
    }
    Ok(buf)
}

/// Copies a strided view out of a storage record, converting to f32.
fn gather(rec: &[u8], t: &TensorRef) -> Result<Vec<f32>, String> {
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("absurd tensor size")?;
    let es = t.dtype.size();
    // Highest element index touched, checked against the record before allocating.
    let max_index = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add(d.saturating_sub(1).checked_mul(s)?)
        })
        .ok_or("absurd tensor stride")?;
    if numel > 0 && (max_index + 1).checked_mul(es).is_none_or(|n| n > rec.len()) {
        return Err(format!(
            "needs {} elements but its storage holds {}",
            max_index + 1,
            rec.len() / es
        ));
    }
    let read = |i: usize| -> f32 {
        let b = &rec[i * es..i * es + es];
        match t.dtype {
            DType::F32 => f32::from_le_bytes(b.try_into().expect("4")),
            DType::F64 => f64::from_le_bytes(b.try_into().expect("8")) as f32,
            DType::F16 => f16::from_le_bytes(b.try_into().expect("2")).to_f32(),
            DType::BF16 => bf16::from_le_bytes(b.try_into().expect("2")).to_f32(),
            DType::I64 => i64::from_le_bytes(b.try_into().expect("8")) as f32,
            DType::I32 => i32::from_le_bytes(b.try_into().expect("4")) as f32,
            DType::I16 => i16::from_le_bytes(b.try_into().expect("2")) as f32,
            DType::I8 => b[0] as i8 as f32,
            DType::U8 | DType::Bool => b[0] as f32,
        }
    };
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let pos = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(read(pos));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}
