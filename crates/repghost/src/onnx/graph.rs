//! An ONNX graph under construction: nodes in order, initializers, and the operators the
//! exporter needs, each written as PyTorch's exporter writes it.

use repghost_plan::plan::{Act, Conv};
use repghost_plan::BN_EPSILON;

use std::collections::HashMap;

use super::proto::*;
use super::qdq::{bias_i32, QParams};
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::weights::{HostTensor, StateDict};

pub(super) struct Graph<'a> {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub opset: i64,
    pub count: usize,
    pub sd: &'a StateDict,
    /// An INT8 file's quantization, exported as QDQ operators.
    pub q: Option<&'a QParams>,
    /// The quantization of each tensor a `DequantizeLinear` of activations outputs: its
    /// scale, and the names of its scale and zero-point initializers.
    pub quant: HashMap<String, (f32, String, String)>,
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: v,
        r#type: ATTR_FLOAT,
        ..Default::default()
    }
}

/// Whether `a` holds the ONNX operator's default value. Such attributes are left out, as
/// PyTorch's exporter does: OpenCV's DNN importer mis-handles some explicit defaults (an
/// explicit `beta = 0.5` on HardSigmoid breaks its fusion of the SE block).
fn is_default(op: &str, a: &AttributeProto) -> bool {
    let all = |v: i64| !a.ints.is_empty() && a.ints.iter().all(|&x| x == v);
    match (op, a.name.as_str()) {
        ("HardSigmoid", "beta") => a.f == 0.5,
        ("HardSigmoid", "alpha") => a.f == 0.2,
        ("LeakyRelu", "alpha") => a.f == 0.01,
        ("BatchNormalization", "epsilon") => a.f == 1e-5,
        ("Conv", "strides" | "dilations") => all(1),
        ("Conv", "pads") => all(0),
        ("Conv", "group") => a.i == 1,
        ("Flatten", "axis") => a.i == 1,
        ("Gemm", "transA" | "transB") => a.i == 0,
        _ => false,
    }
}

impl Graph<'_> {
    pub fn node(&mut self, op: &str, inputs: &[&str], mut attrs: Vec<AttributeProto>) -> String {
        attrs.retain(|a| !is_default(op, a));
        self.count += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.count);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
        });
        out
    }

    fn init(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    fn init_raw(&mut self, name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> String {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.into(),
            raw_data,
        });
        name.into()
    }

    pub fn init_i64(&mut self, name: &str, data: &[i64]) -> String {
        self.inits.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: INT64,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// The state dict's tensor `key`, of `shape`, as an initializer of the same name.
    pub fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<String> {
        let t: &HostTensor = self
            .sd
            .get(key)
            .ok_or_else(|| Error::Invalid(format!("export: the weights have no tensor '{key}'")))?;
        if t.shape != shape {
            return Err(Error::Invalid(format!(
                "export: tensor '{key}' is {:?}, the plan needs {shape:?}",
                t.shape
            )));
        }
        Ok(self.init(key, shape, &t.data))
    }

    fn conv_node(&mut self, x: &str, c: &Conv, weight: &str, bias: bool) -> Result<String> {
        let mut inputs = vec![
            x.to_string(),
            self.tensor(&format!("{weight}.weight"), &c.weight_shape())?,
        ];
        if bias {
            inputs.push(self.tensor(&format!("{weight}.bias"), &[c.cout])?);
        }
        let p = c.k / 2;
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "Conv",
            &inputs,
            vec![
                attr_ints("kernel_shape", &[c.k, c.k]),
                attr_ints("strides", &[c.stride, c.stride]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", c.groups as i64),
            ],
        ))
    }

    /// `c` without its activation: a conv with bias where `folded` (or where it has no
    /// BatchNorm in any form), else a bias-free conv and its BatchNormalization. A conv the
    /// INT8 file quantizes reads its weight and bias through `DequantizeLinear`.
    pub fn conv(&mut self, x: &str, c: &Conv, folded: bool) -> Result<String> {
        if let Some(qc) = self.q.and_then(|q| q.convs.get(&c.key)) {
            return self.qconv(x, c, &qc.weight, &qc.weight_scale);
        }
        match (&c.train, folded) {
            (Some((w, b)), false) => {
                let y = self.conv_node(x, c, w, false)?;
                self.bn(&y, b, c.cout)
            }
            _ => self.conv_node(x, c, &c.key, true),
        }
    }

    /// A conv with s8 weights `w` (scales `ws`) and the i32 bias the runtime computes from
    /// the float bias and the scale of its input `x`.
    fn qconv(&mut self, x: &str, c: &Conv, w: &[i8], ws: &[f32]) -> Result<String> {
        let k = &c.key;
        let s_in = self
            .quant
            .get(x)
            .map(|q| q.0)
            .ok_or_else(|| Error::Invalid(format!("export: the input of '{k}' is not quantized")))?;
        let shape = c.weight_shape();
        if w.len() != shape.iter().product::<usize>() || ws.len() != c.cout {
            return Err(Error::Invalid(format!(
                "export: '{k}.weight' does not fit the plan's {shape:?}"
            )));
        }
        let bias = self
            .sd
            .get(&format!("{k}.bias"))
            .filter(|t| t.data.len() == c.cout)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "export: the weights have no tensor '{k}.bias' [{}]",
                    c.cout
                ))
            })?;
        let sacc: Vec<f32> = ws.iter().map(|&s| s_in * s).collect();
        let bq: Vec<i32> = bias
            .data
            .iter()
            .zip(&sacc)
            .map(|(&b, &s)| bias_i32(b, s))
            .collect();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let wq = self.init_raw(
            &format!("{k}.weight_quantized"),
            &shape,
            INT8,
            w.iter().map(|&v| v as u8).collect(),
        );
        let wsn = self.init_raw(&format!("{k}.weight_scale"), &[c.cout], FLOAT, f32s(ws));
        let wz = self.init_raw(
            &format!("{k}.weight_zero_point"),
            &[c.cout],
            INT8,
            vec![0; c.cout],
        );
        let wd = self.node("DequantizeLinear", &[&wq, &wsn, &wz], vec![attr_int("axis", 0)]);
        let bqn = self.init_raw(
            &format!("{k}.bias_quantized"),
            &[c.cout],
            INT32,
            bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let bs = self.init_raw(&format!("{k}.bias_scale"), &[c.cout], FLOAT, f32s(&sacc));
        let bz = self.init_raw(
            &format!("{k}.bias_zero_point"),
            &[c.cout],
            INT32,
            vec![0; 4 * c.cout],
        );
        let bd = self.node("DequantizeLinear", &[&bqn, &bs, &bz], vec![attr_int("axis", 0)]);
        let p = c.k / 2;
        Ok(self.node(
            "Conv",
            &[x, &wd, &bd],
            vec![
                attr_ints("kernel_shape", &[c.k, c.k]),
                attr_ints("strides", &[c.stride, c.stride]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", c.groups as i64),
            ],
        ))
    }

    /// `x` quantized and dequantized at the INT8 file's output point of conv `key`; `x`
    /// itself where there is no INT8 file.
    pub fn qdq(&mut self, x: &str, key: &str) -> Result<String> {
        let Some(q) = self.q else {
            return Ok(x.to_string());
        };
        let &(scale, zp) = q
            .outputs
            .get(key)
            .ok_or_else(|| Error::Invalid(format!("export: the INT8 file has no '{key}.output_scale'")))?;
        let s = self.init_raw(
            &format!("{key}.output_scale"),
            &[],
            FLOAT,
            scale.to_le_bytes().to_vec(),
        );
        let z = self.init_raw(&format!("{key}.output_zero_point"), &[], UINT8, vec![zp]);
        Ok(self.requantize(x, (scale, s, z)))
    }

    /// `x` quantized and dequantized as tensor `like` is (squeeze-excite's output keeps its
    /// input's quantization); `x` itself where `like` is not quantized.
    pub fn qdq_like(&mut self, x: &str, like: &str) -> String {
        match self.quant.get(like).cloned() {
            Some(q) => self.requantize(x, q),
            None => x.to_string(),
        }
    }

    fn requantize(&mut self, x: &str, (scale, s, z): (f32, String, String)) -> String {
        let q = self.node("QuantizeLinear", &[x, &s, &z], vec![]);
        let d = self.node("DequantizeLinear", &[&q, &s, &z], vec![]);
        self.quant.insert(d.clone(), (scale, s, z));
        d
    }

    pub fn bn(&mut self, x: &str, key: &str, c: usize) -> Result<String> {
        let mut inputs = vec![x.to_string()];
        for p in ["weight", "bias", "running_mean", "running_var"] {
            inputs.push(self.tensor(&format!("{key}.{p}"), &[c])?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "BatchNormalization",
            &inputs,
            vec![attr_float("epsilon", BN_EPSILON as f32)],
        ))
    }

    /// The classifier, a `[classes, features]` matrix, as a Gemm on flattened features.
    pub fn linear(&mut self, x: &str, c: &Conv) -> Result<String> {
        let w = self.tensor(&format!("{}.weight", c.key), &[c.cout, c.cin])?;
        let b = self.tensor(&format!("{}.bias", c.key), &[c.cout])?;
        Ok(self.node("Gemm", &[x, &w, &b], vec![attr_int("transB", 1)]))
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    pub fn act(&mut self, x: &str, act: Act) -> String {
        match act {
            Act::None => x.to_string(),
            Act::Relu | Act::Module(Activation::Relu) => self.relu(x),
            Act::Module(Activation::Relu6) => {
                let lo = self.init(&format!("clip_min_{}", self.count), &[], &[0.0]);
                let hi = self.init(&format!("clip_max_{}", self.count), &[], &[6.0]);
                self.node("Clip", &[x, &lo, &hi], vec![])
            }
            Act::Module(Activation::LeakyRelu) => {
                self.node("LeakyRelu", &[x], vec![attr_float("alpha", 0.01)])
            }
            Act::Module(Activation::HardSwish) if self.opset >= 14 => self.node("HardSwish", &[x], vec![]),
            Act::Module(Activation::HardSwish) => {
                let g = self.hard_sigmoid(x);
                self.node("Mul", &[x, &g], vec![])
            }
        }
    }

    /// `relu6(x + 3) / 6`, PyTorch's hard sigmoid.
    pub fn hard_sigmoid(&mut self, x: &str) -> String {
        self.node(
            "HardSigmoid",
            &[x],
            vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)],
        )
    }
}
