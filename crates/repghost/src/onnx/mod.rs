//! ONNX export of any variant, in train form (BatchNormalization nodes, fusion branches) or
//! deploy form (convs with bias, adds, activations, SE, pooling, classifier; no BatchNorm).
//! Mirrors the forward passes of `net.rs`, `bottleneck.rs`, `ghost_module.rs` and
//! `ghostnet.rs` node for node.

pub mod proto;

use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use prost::Message;
use repghost_data::Preprocess;

use crate::bottleneck::{Bottleneck, Shortcut};
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::ghost_module::{GhostLayer, RepGhostModule};
use crate::ghostnet::GhostModule;
use crate::layers::{ConvBn, SqueezeExcite};
use crate::model::Model;
use crate::net::Net;
use crate::reparam::host;
use crate::weights::Form;
use proto::*;

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// ONNX opset (13 by default; 14 and later use the HardSwish operator).
    pub opset: i64,
    /// A symbolic batch dimension instead of batch 1.
    pub dynamic_batch: bool,
    /// Input height and width recorded in the graph's input shape.
    pub size: [usize; 2],
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: 13,
            dynamic_batch: false,
            size: [224, 224],
        }
    }
}

/// The graph under construction.
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    opset: i64,
    count: usize,
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
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

impl Graph {
    fn node(&mut self, op: &str, inputs: &[&str], mut attrs: Vec<AttributeProto>) -> String {
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

    fn init_i64(&mut self, name: &str, data: &[i64]) -> String {
        self.inits.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: INT64,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    fn conv(&mut self, x: &str, conv: &Conv2d, key: &str) -> String {
        let w = conv.weight.val();
        let dims = w.dims();
        let wn = self.init(&format!("{key}.weight"), &dims, &host(&w));
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = &conv.bias {
            inputs.push(self.init(&format!("{key}.bias"), &[dims[0]], &host(&b.val())));
        }
        let (t, l, b, r) = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            _ => (0, 0, 0, 0),
        };
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            "Conv",
            &inputs,
            vec![
                attr_ints("kernel_shape", &conv.kernel_size),
                attr_ints("strides", &conv.stride),
                attr_ints("pads", &[t, l, b, r]),
                attr_ints("dilations", &conv.dilation),
                attr_int("group", conv.groups as i64),
            ],
        )
    }

    fn bn(&mut self, x: &str, bn: &BatchNorm, key: &str) -> String {
        let c = bn.gamma.val().dims()[0];
        let s = self.init(&format!("{key}.weight"), &[c], &host(&bn.gamma.val()));
        let b = self.init(&format!("{key}.bias"), &[c], &host(&bn.beta.val()));
        let m = self.init(
            &format!("{key}.running_mean"),
            &[c],
            &host(&bn.running_mean.value()),
        );
        let v = self.init(
            &format!("{key}.running_var"),
            &[c],
            &host(&bn.running_var.value()),
        );
        self.node(
            "BatchNormalization",
            &[x, &s, &b, &m, &v],
            vec![attr_float("epsilon", bn.epsilon as f32)],
        )
    }

    fn conv_bn(
        &mut self,
        x: &str,
        conv: &Conv2d,
        bn: Option<&BatchNorm>,
        conv_key: &str,
        bn_key: &str,
    ) -> String {
        let y = self.conv(x, conv, conv_key);
        match bn {
            Some(bn) => self.bn(&y, bn, bn_key),
            None => y,
        }
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    fn act(&mut self, x: &str, act: Option<Activation>) -> String {
        match act {
            None => x.to_string(),
            Some(Activation::Relu) => self.relu(x),
            Some(Activation::Relu6) => {
                let lo = self.init(&format!("clip_min_{}", self.count), &[], &[0.0]);
                let hi = self.init(&format!("clip_max_{}", self.count), &[], &[6.0]);
                self.node("Clip", &[x, &lo, &hi], vec![])
            }
            Some(Activation::LeakyRelu) => self.node("LeakyRelu", &[x], vec![attr_float("alpha", 0.01)]),
            Some(Activation::HardSwish) if self.opset >= 14 => self.node("HardSwish", &[x], vec![]),
            Some(Activation::HardSwish) => {
                let g = self.hard_sigmoid(x);
                self.node("Mul", &[x, &g], vec![])
            }
        }
    }

    /// `relu6(x + 3) / 6`, PyTorch's hard sigmoid.
    fn hard_sigmoid(&mut self, x: &str) -> String {
        self.node(
            "HardSigmoid",
            &[x],
            vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)],
        )
    }

    fn conv_bn_seq(&mut self, x: &str, cb: &ConvBn, key: &str, form_key: &str) -> String {
        // Keys as the state dict names them: `.0`/`.1`, or the bare conv of a fused cheap op.
        if cb.bn.is_some() {
            self.conv_bn(
                x,
                &cb.conv,
                cb.bn.as_ref(),
                &format!("{key}.0"),
                &format!("{key}.1"),
            )
        } else {
            self.conv(x, &cb.conv, form_key)
        }
    }

    fn se(&mut self, x: &str, se: &SqueezeExcite, key: &str) -> String {
        let p = self.node("GlobalAveragePool", &[x], vec![]);
        let r = self.conv(&p, &se.conv_reduce, &format!("{key}.conv_reduce"));
        let r = self.relu(&r);
        let e = self.conv(&r, &se.conv_expand, &format!("{key}.conv_expand"));
        let g = self.hard_sigmoid(&e);
        self.node("Mul", &[x, &g], vec![])
    }
}

/// How a ghost module appears in ONNX.
trait ExportGhost {
    fn export(&self, g: &mut Graph, x: &str, key: &str) -> String;
}

impl ExportGhost for RepGhostModule {
    fn export(&self, g: &mut Graph, x: &str, key: &str) -> String {
        let x1 = g.conv_bn_seq(
            x,
            &self.primary_conv,
            &format!("{key}.primary_conv"),
            &format!("{key}.primary_conv.0"),
        );
        let x1 = g.act(&x1, self.act);
        let mut x2 = g.conv_bn_seq(
            &x1,
            &self.cheap_operation,
            &format!("{key}.cheap_operation"),
            &format!("{key}.cheap_operation"),
        );
        if let Some(bn) = &self.fusion_bn {
            let b = g.bn(&x1, bn, &format!("{key}.fusion_bn.0"));
            x2 = g.node("Add", &[&x2, &b], vec![]);
        }
        if self.fusion_identity {
            x2 = g.node("Add", &[&x2, &x1], vec![]);
        }
        g.act(&x2, self.act)
    }
}

impl ExportGhost for GhostModule {
    fn export(&self, g: &mut Graph, x: &str, key: &str) -> String {
        let x1 = g.conv_bn_seq(
            x,
            &self.primary_conv,
            &format!("{key}.primary_conv"),
            &format!("{key}.primary_conv.0"),
        );
        let x1 = g.act(&x1, self.act);
        let x2 = g.conv_bn_seq(
            &x1,
            &self.cheap_operation,
            &format!("{key}.cheap_operation"),
            &format!("{key}.cheap_operation"),
        );
        let x2 = g.act(&x2, self.act);
        let cat = g.node("Concat", &[&x1, &x2], vec![attr_int("axis", 1)]);
        let init = self.primary_conv.conv.weight.dims()[0];
        if 2 * init == self.out_chs {
            return cat;
        }
        let n = g.count;
        let starts = g.init_i64(&format!("slice_starts_{n}"), &[0]);
        let ends = g.init_i64(&format!("slice_ends_{n}"), &[self.out_chs as i64]);
        let axes = g.init_i64(&format!("slice_axes_{n}"), &[1]);
        g.node("Slice", &[&cat, &starts, &ends, &axes], vec![])
    }
}

fn block<G: GhostLayer + ExportGhost>(g: &mut Graph, b: &Bottleneck<G>, x: &str, key: &str) -> String {
    let mut y = b.ghost1.export(g, x, &format!("{key}.ghost1"));
    if let Some(conv) = &b.conv_dw {
        y = g.conv_bn(
            &y,
            conv,
            b.bn_dw.as_ref(),
            &format!("{key}.conv_dw"),
            &format!("{key}.bn_dw"),
        );
    }
    if let Some(se) = &b.se {
        y = g.se(&y, se, &format!("{key}.se"));
    }
    y = b.ghost2.export(g, &y, &format!("{key}.ghost2"));
    match (&b.shortcut, b.identity) {
        (
            Some(Shortcut {
                conv_dw,
                bn_dw,
                conv_pw,
                bn_pw,
            }),
            _,
        ) => {
            let s = g.conv_bn(
                x,
                conv_dw,
                bn_dw.as_ref(),
                &format!("{key}.shortcut.0"),
                &format!("{key}.shortcut.1"),
            );
            let s = g.conv_bn(
                &s,
                conv_pw,
                bn_pw.as_ref(),
                &format!("{key}.shortcut.2"),
                &format!("{key}.shortcut.3"),
            );
            g.node("Add", &[&y, &s], vec![])
        }
        (None, true) => g.node("Add", &[&y, x], vec![]),
        (None, false) => y,
    }
}

fn net<G: GhostLayer + ExportGhost>(g: &mut Graph, m: &Net<G>) -> String {
    let x = g.conv_bn("input", &m.conv_stem, m.bn1.as_ref(), "conv_stem", "bn1");
    let mut x = g.relu(&x);
    for (s, stage) in m.blocks.iter().enumerate() {
        for (j, b) in stage.iter().enumerate() {
            x = block(g, b, &x, &format!("blocks.{s}.{j}"));
        }
    }
    let n = m.blocks.len();
    let x = g.conv_bn(
        &x,
        &m.final_conv.conv,
        m.final_conv.bn1.as_ref(),
        &format!("blocks.{n}.0.conv"),
        &format!("blocks.{n}.0.bn1"),
    );
    let x = g.relu(&x);
    let x = g.node("GlobalAveragePool", &[&x], vec![]);
    let x = g.conv(&x, &m.conv_head, "conv_head");
    let x = g.relu(&x);
    let x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    let w = m.classifier.weight.val();
    let wn = g.init("classifier.weight", &w.dims(), &host(&w));
    let b = m.classifier.bias.val();
    let bn = g.init("classifier.bias", &b.dims(), &host(&b));
    let y = g.node("Gemm", &[&x, &wn, &bn], vec![attr_int("transB", 1)]);
    // A stable output name.
    g.nodes.last_mut().expect("Gemm").output = vec!["logits".into()];
    let _ = y;
    "logits".into()
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            }),
        }),
    }
}

fn fixed(v: usize) -> Dimension {
    Dimension {
        dim_value: Some(v as i64),
        dim_param: None,
    }
}

/// Serializes `model` (whose weights are in `form`) as an ONNX model.
pub fn export(
    model: &Model,
    name: &str,
    form: Form,
    preprocess: Option<&Preprocess>,
    opts: &ExportOptions,
) -> Result<Vec<u8>> {
    if !(11..=21).contains(&opts.opset) {
        return Err(Error::Invalid(format!(
            "opset {} not supported (11 to 21)",
            opts.opset
        )));
    }
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        opset: opts.opset,
        count: 0,
    };
    let cfg = model.config().clone();
    match model {
        Model::RepGhost(m) => net(&mut g, m),
        Model::Ghost(m) => net(&mut g, m),
    };
    let batch = if opts.dynamic_batch {
        Dimension {
            dim_value: None,
            dim_param: Some("batch".into()),
        }
    } else {
        fixed(1)
    };
    let [h, w] = opts.size;
    let input = value_info("input", &[batch.clone(), fixed(cfg.in_chans), fixed(h), fixed(w)]);
    let output = value_info("logits", &[batch, fixed(cfg.num_classes)]);
    let pre = preprocess.cloned().unwrap_or_default();
    let meta = [
        ("model", name.to_string()),
        ("form", form.as_str().to_string()),
        (
            "config",
            serde_json::to_string(&cfg).map_err(|e| Error::Invalid(e.to_string()))?,
        ),
        (
            "preprocess",
            serde_json::to_string(&pre).map_err(|e| Error::Invalid(e.to_string()))?,
        ),
        (
            "paper",
            "RepGhost: A Hardware-Efficient Ghost Module via Re-parameterization (arXiv 2211.06088)".into(),
        ),
    ];
    let model = ModelProto {
        ir_version: 8,
        producer_name: "repghost".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{name}, {} form", form.as_str()),
        graph: Some(GraphProto {
            node: g.nodes,
            name: name.into(),
            initializer: g.inits,
            input: vec![input],
            output: vec![output],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v,
            })
            .collect(),
    };
    Ok(model.encode_to_vec())
}
