//! ONNX export of any variant in any form: train (BatchNormalization nodes, fusion
//! branches), fused (the official `convert.py` structure) or deploy (convs with bias, adds,
//! activations, SE, pooling, classifier; no BatchNorm). The graph follows the network's
//! [`Plan`] layer by layer and takes each tensor from the state dict of the form by the key
//! the plan names.

mod graph;
pub mod proto;
mod qdq;

use prost::Message;
use repghost_data::Preprocess;
use repghost_plan::plan::{Block, Ghost, Shortcut};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::{state_dict, Form, StateDict};
use crate::Plan;
use graph::{attr_int, Graph};
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

/// A ghost module: `act(cheap(act(primary(x))) [+ fusion BN] [+ identity])` for RepGhost, or
/// the concatenation of `act(primary(x))` and `act(cheap(..))`, sliced, for GhostNet.
///
/// With an INT8 file, the primary conv's output is quantized here, and so is the cheap
/// conv's unless `last` (the block's second module, whose output is quantized after the
/// residual add).
fn ghost(g: &mut Graph, m: &Ghost, x: &str, form: Form, last: bool) -> Result<String> {
    let deploy = form == Form::Deploy;
    let x1 = g.conv(x, &m.primary, deploy)?;
    let x1 = g.act(&x1, m.primary.act);
    let x1 = g.qdq(&x1, &m.primary.key)?;
    // The official `convert.py` folds the fusion branches into a bare cheap conv.
    let mut x2 = g.conv(&x1, &m.cheap, deploy || (!m.concat && form == Form::Fused))?;
    if form == Form::Train {
        if let Some(f) = &m.fusion_bn {
            let b = g.bn(&x1, &format!("{f}.0"), m.primary.cout)?;
            x2 = g.node("Add", &[&x2, &b], vec![]);
        }
        if m.fusion_identity {
            x2 = g.node("Add", &[&x2, &x1], vec![]);
        }
    }
    let x2 = g.act(&x2, m.cheap.act);
    if !m.concat {
        return if last { Ok(x2) } else { g.qdq(&x2, &m.cheap.key) };
    }
    let cat = g.node("Concat", &[&x1, &x2], vec![attr_int("axis", 1)]);
    if 2 * m.primary.cout == m.out {
        return Ok(cat);
    }
    let n = g.count;
    let starts = g.init_i64(&format!("slice_starts_{n}"), &[0]);
    let ends = g.init_i64(&format!("slice_ends_{n}"), &[m.out as i64]);
    let axes = g.init_i64(&format!("slice_axes_{n}"), &[1]);
    Ok(g.node("Slice", &[&cat, &starts, &ends, &axes], vec![]))
}

fn block(g: &mut Graph, b: &Block, x: &str, form: Form) -> Result<String> {
    let deploy = form == Form::Deploy;
    let mut y = ghost(g, &b.ghost1, x, form, false)?;
    if let Some(c) = &b.conv_dw {
        y = g.conv(&y, c, deploy)?;
        y = g.qdq(&y, &c.key)?;
    }
    if let Some(se) = &b.se {
        let p = g.node("GlobalAveragePool", &[&y], vec![]);
        let r = g.conv(&p, &se.reduce, true)?;
        let r = g.relu(&r);
        let e = g.conv(&r, &se.expand, true)?;
        let gate = g.hard_sigmoid(&e);
        let scaled = g.node("Mul", &[&y, &gate], vec![]);
        y = g.qdq_like(&scaled, &y);
    }
    y = ghost(g, &b.ghost2, &y, form, true)?;
    let out = match &b.shortcut {
        Shortcut::Projection { dw, pw } => {
            let s = g.conv(x, dw, deploy)?;
            let s = g.qdq(&s, &dw.key)?;
            let s = g.conv(&s, pw, deploy)?;
            let s = g.qdq(&s, &pw.key)?;
            g.node("Add", &[&y, &s], vec![])
        }
        Shortcut::Identity => g.node("Add", &[&y, x], vec![]),
        Shortcut::None => y,
    };
    if b.ghost2.concat {
        return Ok(out);
    }
    g.qdq(&out, &b.ghost2.cheap.key)
}

fn net(g: &mut Graph, plan: &Plan, form: Form) -> Result<()> {
    let deploy = form == Form::Deploy;
    let x = g.conv("input", &plan.stem, deploy)?;
    let x = g.act(&x, plan.stem.act);
    let mut x = g.qdq(&x, &plan.stem.key)?;
    for b in &plan.blocks {
        x = block(g, b, &x, form)?;
    }
    let x = g.conv(&x, &plan.final_conv, deploy)?;
    let x = g.act(&x, plan.final_conv.act);
    let x = g.qdq(&x, &plan.final_conv.key)?;
    let x = g.node("GlobalAveragePool", &[&x], vec![]);
    let x = g.conv(&x, &plan.conv_head, true)?;
    let x = g.act(&x, plan.conv_head.act);
    let x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    g.linear(&x, &plan.classifier)?;
    // A stable output name.
    g.nodes.last_mut().expect("the classifier's Gemm").output = vec!["logits".into()];
    Ok(())
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
    let plan = Plan::new(model.config());
    export_state_dict(&plan, &state_dict(model, form), name, form, preprocess, opts)
}

/// Serializes the network of `plan` with the tensors of `sd` (a state dict of `form`, under
/// the plan's keys) as an ONNX model. A tensor the plan needs and `sd` lacks, or holds in
/// another shape, is an error naming its key.
pub fn export_state_dict(
    plan: &Plan,
    sd: &StateDict,
    name: &str,
    form: Form,
    preprocess: Option<&Preprocess>,
    opts: &ExportOptions,
) -> Result<Vec<u8>> {
    build(plan, sd, None, name, form, preprocess, opts)
}

/// Serializes an INT8 file (`repghost quantize`; `path` names it in errors) as a QDQ ONNX
/// model: the deploy graph with `QuantizeLinear`/`DequantizeLinear` at every quantization
/// point and per-channel `DequantizeLinear` on the s8 weights and i32 biases, with the file's
/// scales (opset 13 or later). Model name and preprocessing come from the file's metadata.
pub fn export_int8(path: &std::path::Path, int8: &[u8], opts: &ExportOptions) -> Result<Vec<u8>> {
    if opts.opset < 13 {
        return Err(Error::Invalid(format!(
            "opset {}: per-channel DequantizeLinear needs opset 13 or later",
            opts.opset
        )));
    }
    let (sd, meta) = crate::weights::safetensors_io::read(path, int8)?;
    let meta = meta.ok_or_else(|| Error::format(path, "an INT8 file without repghost metadata"))?;
    let q = qdq::QParams::read(int8).map_err(|e| Error::format(path, e.to_string()))?;
    let plan = Plan::new(&meta.config);
    build(
        &plan,
        &sd,
        Some(&q),
        &meta.model,
        Form::Deploy,
        meta.preprocess.as_ref(),
        opts,
    )
}

#[allow(clippy::too_many_arguments)]
fn build(
    plan: &Plan,
    sd: &StateDict,
    q: Option<&qdq::QParams>,
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
        sd,
        q,
        quant: Default::default(),
    };
    net(&mut g, plan, form)?;
    let cfg = &plan.config;
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
        ("precision", if q.is_some() { "int8" } else { "f32" }.to_string()),
        (
            "config",
            serde_json::to_string(cfg).map_err(|e| Error::Invalid(e.to_string()))?,
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
