//! ONNX export: the graphs hold the expected operators (no BatchNormalization in the deploy
//! form, Concat only for GhostNet), write no attribute at its ONNX default, and carry their
//! metadata. Numerics are checked by independent engines: with `REPGHOST_ONNX_DIR` set, the
//! test writes each export with its input and burn's logits there, and
//! `scripts/check_onnx.py --exports DIR` runs them in ONNX Runtime and OpenCV's DNN module
//! (CI does both).

use std::path::Path;

use burn::tensor::{Device, TensorData};
use prost::Message;
use repghost::npy::{self, Array};
use repghost::onnx::{export, export_int8, proto::ModelProto, ExportOptions};
use repghost::quantize::deploy_bytes_of;
use repghost::random::{calibrated, Rng};
use repghost::variants::resolve;
use repghost::weights::Form;
use repghost::Model;
use repghost_runtime::quant::{Calibrator, QuantizeOptions};
use repghost_runtime::Layout;

fn burn_logits(m: &Model, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let t = burn::tensor::Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &Device::flex());
    m.forward(t)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn exported_graphs_hold_the_expected_operators() {
    let size = 64;
    for (name, form, batch, dynamic) in [
        ("repghostnet_050", Form::Deploy, 1, false),
        ("repghostnet_100", Form::Deploy, 3, true),
        ("repghostnet_130", Form::Train, 1, false),
        ("repghostnet_repid_0_5x", Form::Train, 2, true),
        ("ghostnet_050", Form::Deploy, 2, true),
        ("ghostnet_100", Form::Train, 1, false),
    ] {
        let train = calibrated(&resolve(name).unwrap().1.config(10), 21, size);
        let model = if form == Form::Deploy {
            train.reparameterize()
        } else {
            train
        };
        let opts = ExportOptions {
            dynamic_batch: dynamic,
            size: [size, size],
            ..Default::default()
        };
        let bytes = export(&model, name, form, None, &opts).unwrap();
        let decoded = ModelProto::decode(&bytes[..]).unwrap();
        let ops: Vec<&str> = decoded
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            ops.contains(&"BatchNormalization"),
            form == Form::Train,
            "{name}: {ops:?}"
        );
        assert_eq!(ops.contains(&"Concat"), name.starts_with("ghostnet"), "{name}");
        assert_no_default_attributes(&decoded, name);
        if let Some(dir) = std::env::var_os("REPGHOST_ONNX_DIR") {
            let shape = [batch, 3, size, size];
            let x = Rng::new(4).normals(shape.iter().product());
            let want = burn_logits(&model, &x, shape);
            let n_out = want.len() / batch;
            write_case(
                Path::new(&dir),
                &format!("{name}_{}", form.as_str()),
                &bytes,
                x,
                shape,
                want,
                n_out,
            );
        }
    }
}

/// An INT8 file exports as a QDQ graph: every quantized conv reads an INT8 weight and an
/// INT32 bias through per-channel `DequantizeLinear` (axis 0), and every quantization point
/// of the file passes through `QuantizeLinear` with its scale and zero point. With
/// `REPGHOST_ONNX_DIR` the export is written with the INT8 runtime's logits, which
/// `scripts/check_onnx.py` compares with ONNX Runtime's.
#[test]
fn int8_files_export_as_qdq_graphs() {
    let size = 48;
    for (name, per_channel) in [("repghostnet_050", true), ("repghostnet_100", false)] {
        let deploy = calibrated(&resolve(name).unwrap().1.config(10), 21, size).reparameterize();
        let bytes = deploy_bytes_of(&deploy, name, None).unwrap();
        let shape = [2, 3, size, size];
        let x = Rng::new(4).normals(shape.iter().product());
        let mut cal = Calibrator::from_bytes(&bytes).unwrap();
        cal.observe(&x, 2, size, size, Layout::Nchw).unwrap();
        let opts = QuantizeOptions {
            per_channel,
            ..Default::default()
        };
        let int8 = cal.quantize(&opts).unwrap();
        let eopts = ExportOptions {
            dynamic_batch: true,
            size: [size, size],
            ..Default::default()
        };
        let path = Path::new("int8.safetensors");
        let onnx = export_int8(path, &int8, &eopts).unwrap();
        let m = ModelProto::decode(&onnx[..]).unwrap();
        let g = m.graph.as_ref().unwrap();
        let init = |n: &str| g.initializer.iter().find(|t| t.name == n);
        let st = safetensors::SafeTensors::deserialize(&int8).unwrap();
        let (mut weights, mut points) = (0, 0);
        for key in st.names() {
            if let Some(conv) = key.strip_suffix(".weight_scale") {
                weights += 1;
                let w = init(&format!("{conv}.weight_quantized")).expect("an INT8 weight");
                assert_eq!(w.data_type, repghost::onnx::proto::INT8, "{conv}");
                assert_eq!(
                    w.raw_data,
                    st.tensor(&format!("{conv}.weight")).unwrap().data(),
                    "{conv}"
                );
                let b = init(&format!("{conv}.bias_quantized")).expect("an INT32 bias");
                assert_eq!(b.data_type, repghost::onnx::proto::INT32, "{conv}");
            }
            if let Some(point) = key.strip_suffix(".output_scale") {
                points += 1;
                let s = init(key).expect("the output scale");
                assert_eq!(s.raw_data, st.tensor(key).unwrap().data(), "{point}");
                let q = g
                    .node
                    .iter()
                    .filter(|n| n.op_type == "QuantizeLinear" && n.input[1] == key)
                    .count();
                assert!(q >= 1, "{point}: no QuantizeLinear");
            }
        }
        let dq_weights = g
            .node
            .iter()
            .filter(|n| n.op_type == "DequantizeLinear" && n.input[0].ends_with(".weight_quantized"))
            .count();
        assert!(
            weights > 0 && dq_weights == weights,
            "{name}: {dq_weights} of {weights}"
        );
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert!(!ops.contains(&"BatchNormalization"));
        assert_no_default_attributes(&m, name);
        // The stem's output and each quantized conv's.
        assert_eq!(points, weights + 1, "{name}");
        if let Some(dir) = std::env::var_os("REPGHOST_ONNX_DIR") {
            let rt = repghost_runtime::Model::from_bytes(&int8).unwrap();
            let mut ws = rt.workspace_threads(2, size, size, 1).unwrap();
            let want = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
            write_case(
                Path::new(&dir),
                &format!("{name}_int8"),
                &onnx,
                x,
                shape,
                want,
                10,
            );
        }
    }
}

/// `DIR/NAME.onnx`, `NAME.input.npy` and `NAME.logits.npy` for `scripts/check_onnx.py`.
fn write_case(
    dir: &Path,
    name: &str,
    onnx: &[u8],
    x: Vec<f32>,
    shape: [usize; 4],
    logits: Vec<f32>,
    n_out: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.onnx")), onnx).unwrap();
    let input = Array {
        shape: shape.to_vec(),
        data: x,
    };
    npy::write(&dir.join(format!("{name}.input.npy")), &input).unwrap();
    let logits = Array {
        shape: vec![shape[0], n_out],
        data: logits,
    };
    npy::write(&dir.join(format!("{name}.logits.npy")), &logits).unwrap();
}

/// Only attributes that differ from the ONNX default are written, as PyTorch's exporter does
/// (OpenCV's DNN importer fails on an SE block whose HardSigmoid spells out `beta = 0.5`).
/// The defaults here are the operator specification's.
fn assert_no_default_attributes(m: &ModelProto, name: &str) {
    let mut hard_sigmoids = 0;
    for n in &m.graph.as_ref().unwrap().node {
        for a in &n.attribute {
            let default = match (n.op_type.as_str(), a.name.as_str()) {
                ("HardSigmoid", "alpha") => a.f == 0.2,
                ("HardSigmoid", "beta") => a.f == 0.5,
                ("BatchNormalization", "epsilon") => a.f == 1e-5,
                ("Conv", "group") | ("Flatten", "axis") => a.i == 1,
                ("Conv", "strides" | "dilations") => a.ints.iter().all(|&v| v == 1),
                ("Conv", "pads") => a.ints.iter().all(|&v| v == 0),
                _ => false,
            };
            assert!(!default, "{name}: {} writes its default {}", n.op_type, a.name);
        }
        if n.op_type == "HardSigmoid" {
            hard_sigmoids += 1;
            let names: Vec<&str> = n.attribute.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(
                names,
                ["alpha"],
                "{name}: PyTorch's hard sigmoid is alpha 1/6, beta 0.5"
            );
        }
    }
    assert!(hard_sigmoids > 0, "{name}: the SE blocks export HardSigmoid");
}

#[test]
fn metadata_names_model_form_and_preprocessing() {
    let cfg = resolve("repghostnet_050").unwrap().1.config(10);
    let m = Model::new(&cfg, &Device::flex()).reparameterize();
    let bytes = export(
        &m,
        "repghostnet_050",
        Form::Deploy,
        None,
        &ExportOptions::default(),
    )
    .unwrap();
    let p = ModelProto::decode(&bytes[..]).unwrap();
    let get = |k: &str| {
        p.metadata_props
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    assert_eq!(get("model").as_deref(), Some("repghostnet_050"));
    assert_eq!(get("form").as_deref(), Some("deploy"));
    assert!(get("preprocess").unwrap().contains("\"img_size\":224"));
    assert_eq!(p.opset_import[0].version, 13);
    assert!(export(
        &m,
        "x",
        Form::Deploy,
        None,
        &ExportOptions {
            opset: 7,
            ..Default::default()
        }
    )
    .is_err());
}

/// The exporter takes every tensor from the state dict by the plan's key: a tensor missing
/// from it, or of another shape, is an error naming the key, and the fused form (the
/// official `convert.py` structure) exports with its bare cheap convs and kept BatchNorms.
#[test]
fn the_export_names_a_missing_or_misshaped_tensor() {
    use repghost::onnx::export_state_dict;
    use repghost::weights::state_dict;
    use repghost::Plan;

    let model = calibrated(&resolve("repghostnet_050").unwrap().1.config(10), 3, 32);
    let plan = Plan::new(model.config());
    let opts = ExportOptions::default();
    let fused = state_dict(&model.clone().fuse_branches(), Form::Fused);
    let bytes = export_state_dict(&plan, &fused, "m", Form::Fused, None, &opts).unwrap();
    let g = ModelProto::decode(&bytes[..]).unwrap().graph.unwrap();
    let bn = g
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .count();
    let adds = g.node.iter().filter(|n| n.op_type == "Add").count();
    // Every conv keeps its BatchNorm but the two cheap ops of each block, the SE convs and
    // `conv_head`, which carry biases; the fusion branches are gone, leaving one shortcut add
    // per block.
    let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
    let se = plan.blocks.iter().filter(|b| b.se.is_some()).count();
    assert_eq!(bn, convs - 2 * plan.blocks.len() - 2 * se - 1);
    assert_eq!(adds, plan.blocks.len());

    let key = "blocks.3.0.ghost1.cheap_operation.bias";
    let mut sd = state_dict(&model.clone().reparameterize(), Form::Deploy);
    let t = sd.remove(key).unwrap();
    let e = export_state_dict(&plan, &sd, "m", Form::Deploy, None, &opts).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("export: the weights have no tensor '{key}'")
    );
    let mut short = t.clone();
    short.shape = vec![t.shape[0] - 1];
    short.data.pop();
    sd.insert(key.into(), short);
    let e = export_state_dict(&plan, &sd, "m", Form::Deploy, None, &opts).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("'{key}' is [{}]", t.shape[0] - 1)),
        "{e}"
    );
}
