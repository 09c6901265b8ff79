//! The INT8 file: a native deploy-form safetensors file whose metadata says
//! `precision=int8`. Each quantized conv `{key}` holds `{key}.weight` (I8, the deploy shape),
//! `{key}.weight_scale` (F32 `[cout]`), `{key}.bias` (F32) and its output's
//! `{key}.output_scale` (F32 `[1]`) and `{key}.output_zero_point` (U8 `[1]`):
//! `real = scale · (q − zero_point)`. The stem (computed in float, its output quantized)
//! holds F32 weights and the output pair; squeeze-excite, `conv_head` and the classifier
//! stay F32.

use std::collections::{BTreeMap, HashMap};

use repghost_plan::plan::{self, Plan};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::Tensors;

/// The metadata value of `precision` in an INT8 file.
pub const INT8: &str = "int8";

/// The convs whose weights are s8 and whose outputs are u8: every conv of the bottlenecks
/// but squeeze-excite's, and the final 1×1 conv.
pub(crate) fn quantized(p: &Plan) -> Vec<&plan::Conv> {
    let mut out = Vec::new();
    for b in &p.blocks {
        out.extend([&b.ghost1.primary, &b.ghost1.cheap]);
        out.extend(&b.conv_dw);
        out.extend([&b.ghost2.primary, &b.ghost2.cheap]);
        if let plan::Shortcut::Projection { dw, pw } = &b.shortcut {
            out.extend([&**dw, &**pw]);
        }
    }
    out.push(&p.final_conv);
    out
}

/// The quantization point each quantized conv reads: the key of the conv whose output is
/// its input (squeeze-excite keeps its map's quantization).
pub(crate) fn inputs(p: &Plan) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut x = p.stem.key.clone();
    let mut put = |c: &plan::Conv, from: &str| {
        m.insert(c.key.clone(), from.to_string());
        c.key.clone()
    };
    for b in &p.blocks {
        let a = put(&b.ghost1.primary, &x);
        let mut y = put(&b.ghost1.cheap, &a);
        if let Some(dw) = &b.conv_dw {
            y = put(dw, &y);
        }
        let d = put(&b.ghost2.primary, &y);
        if let plan::Shortcut::Projection { dw, pw } = &b.shortcut {
            let f = put(dw, &x);
            put(pw, &f);
        }
        x = put(&b.ghost2.cheap, &d);
    }
    put(&p.final_conv, &x);
    m
}

/// The tensors of an INT8 file, checked as they are read.
pub(crate) struct Int8File<'a> {
    pub(crate) st: SafeTensors<'a>,
    /// Keys of the convs with s8 weights.
    quantized: BTreeMap<String, usize>,
}

impl<'a> Int8File<'a> {
    pub(crate) fn new(st: SafeTensors<'a>, plan: &Plan) -> Int8File<'a> {
        let quantized = quantized(plan)
            .into_iter()
            .map(|c| (c.key.clone(), c.cout))
            .collect();
        Int8File { st, quantized }
    }

    fn view(&self, key: &str, dtype: Dtype, shape: &[usize]) -> Result<TensorView<'_>> {
        let v = self
            .st
            .tensor(key)
            .map_err(|_| Error::Model(format!("missing tensor '{key}' {shape:?}")))?;
        if v.dtype() != dtype || v.shape() != shape {
            return Err(Error::Model(format!(
                "tensor '{key}' is {:?} {:?}, the int8 model needs {dtype:?} {shape:?}",
                v.dtype(),
                v.shape()
            )));
        }
        Ok(v)
    }

    pub(crate) fn f32(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let v = self.view(key, Dtype::F32, shape)?;
        let d: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if d.iter().any(|x| !x.is_finite()) {
            return Err(Error::Model(format!(
                "tensor '{key}' holds NaN or infinite values"
            )));
        }
        Ok(d)
    }

    /// A quantized conv's s8 weight and per-channel scales (finite, positive).
    pub(crate) fn weight(&self, c: &plan::Conv) -> Result<(Vec<i8>, Vec<f32>)> {
        let key = format!("{}.weight", c.key);
        let w = self.view(&key, Dtype::I8, &c.weight_shape())?;
        let w: Vec<i8> = w.data().iter().map(|&b| b as i8).collect();
        let skey = format!("{}.weight_scale", c.key);
        let s = self.f32(&skey, &[c.cout])?;
        if s.iter().any(|&v| v <= 0.0) {
            return Err(Error::Model(format!(
                "tensor '{skey}' holds a scale that is not positive"
            )));
        }
        Ok((w, s))
    }

    /// The scale and zero point of the output of the conv `key`.
    pub(crate) fn output(&self, key: &str) -> Result<(f32, u8)> {
        let skey = format!("{key}.output_scale");
        let s = self.f32(&skey, &[1])?[0];
        if s <= 0.0 || s.recip().is_infinite() {
            return Err(Error::Model(format!(
                "tensor '{skey}' is not a usable scale ({s})"
            )));
        }
        let zp = self
            .view(&format!("{key}.output_zero_point"), Dtype::U8, &[1])?
            .data()[0];
        Ok((s, zp))
    }
}

/// The dequantized weights (`q · scale`), as the float layers of the model read them.
impl Tensors for Int8File<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Ok(v) = self.st.tensor(key) else {
            return Ok(None);
        };
        if let Some(conv) = key
            .strip_suffix(".weight")
            .filter(|k| self.quantized.contains_key(*k))
        {
            if v.dtype() != Dtype::I8 {
                return Err(Error::Model(format!(
                    "tensor '{key}' is {:?}, expected I8",
                    v.dtype()
                )));
            }
            let cout = self.quantized[conv];
            let s = self.f32(&format!("{conv}.weight_scale"), &[cout])?;
            let per = v.data().len() / cout.max(1);
            let d = v
                .data()
                .iter()
                .enumerate()
                .map(|(i, &q)| q as i8 as f32 * s[i / per.max(1)])
                .collect();
            return Ok(Some((v.shape().to_vec(), d)));
        }
        Tensors::get(&self.st, key)
    }

    fn keys(&self) -> Vec<String> {
        self.st
            .names()
            .into_iter()
            .filter(|k| {
                !(k.ends_with(".weight_scale")
                    || k.ends_with(".output_scale")
                    || k.ends_with(".output_zero_point"))
            })
            .map(str::to_string)
            .collect()
    }
}

/// One tensor to write: dtype, shape, little-endian bytes.
pub(crate) type Raw = (Dtype, Vec<usize>, Vec<u8>);

/// Serializes `tensors` with `meta`.
pub(crate) fn write(tensors: &BTreeMap<String, Raw>, meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(k, (dt, shape, data))| {
            TensorView::new(*dt, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Model(format!("tensor '{k}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::Model(format!("cannot serialize: {e}")))
}

/// Float values as F32 bytes.
pub(crate) fn f32_raw(shape: Vec<usize>, v: &[f32]) -> Raw {
    (
        Dtype::F32,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}
