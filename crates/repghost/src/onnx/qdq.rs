//! The quantization of an INT8 file as QDQ operators: each quantized conv reads its s8
//! weight and its i32 bias through per-channel `DequantizeLinear` nodes, and each
//! quantization point (a conv's output after its activation and residual add, the stem's
//! output, the map squeeze-excite rescales) passes through `QuantizeLinear` and
//! `DequantizeLinear` with the file's u8 scale and zero point. The bias is rounded as the
//! runtime's INT8 engine rounds it: `round(b / (s_in · s_w[o]))`, clamped to ±2³⁰.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A quantized conv's s8 weight and its per-channel scales.
pub(super) struct QConv {
    pub weight: Vec<i8>,
    pub weight_scale: Vec<f32>,
}

/// The quantization tensors of an INT8 file, by conv key; `outputs` also holds the stem's.
pub(super) struct QParams {
    pub convs: HashMap<String, QConv>,
    pub outputs: HashMap<String, (f32, u8)>,
}

fn tensor<'a>(st: &'a SafeTensors, key: &str, dtype: Dtype) -> Result<safetensors::tensor::TensorView<'a>> {
    let v = st
        .tensor(key)
        .map_err(|_| Error::Invalid(format!("the INT8 file has no tensor '{key}'")))?;
    if v.dtype() != dtype {
        return Err(Error::Invalid(format!(
            "tensor '{key}' is {:?}, an INT8 file holds it as {dtype:?}",
            v.dtype()
        )));
    }
    Ok(v)
}

fn floats(st: &SafeTensors, key: &str) -> Result<Vec<f32>> {
    let v = tensor(st, key, Dtype::F32)?;
    let d: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if d.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(Error::Invalid(format!(
            "tensor '{key}' holds a scale that is not positive"
        )));
    }
    Ok(d)
}

impl QParams {
    /// The quantization tensors of an INT8 file (`repghost quantize`).
    pub fn read(bytes: &[u8]) -> Result<QParams> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Invalid(format!("not a safetensors file: {e}")))?;
        let mut outputs = HashMap::new();
        for name in st.names() {
            if let Some(key) = name.strip_suffix(".output_scale") {
                let s = floats(&st, name)?;
                let zp = tensor(&st, &format!("{key}.output_zero_point"), Dtype::U8)?.data();
                if s.len() != 1 || zp.len() != 1 {
                    return Err(Error::Invalid(format!(
                        "'{key}': an output's scale and zero point are single values"
                    )));
                }
                outputs.insert(key.to_string(), (s[0], zp[0]));
            }
        }
        let mut convs = HashMap::new();
        for name in st.names() {
            if let Some(key) = name.strip_suffix(".weight_scale") {
                let weight_scale = floats(&st, name)?;
                let w = tensor(&st, &format!("{key}.weight"), Dtype::I8)?;
                if !outputs.contains_key(key) {
                    return Err(Error::Invalid(format!("'{key}' has no output quantization")));
                }
                convs.insert(
                    key.to_string(),
                    QConv {
                        weight: w.data().iter().map(|&b| b as i8).collect(),
                        weight_scale,
                    },
                );
            }
        }
        Ok(QParams { convs, outputs })
    }
}

/// The runtime's i32 bias of a conv: `round(b / sacc)`, clamped to ±2³⁰.
pub(super) fn bias_i32(b: f32, sacc: f32) -> i32 {
    (b as f64 / sacc as f64)
        .round()
        .clamp(-(1i64 << 30) as f64, (1i64 << 30) as f64) as i32
}
