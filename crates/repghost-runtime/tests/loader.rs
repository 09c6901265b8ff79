//! The loader builds the network from the plan of the configuration in the file's metadata
//! and refuses, with one line naming what is wrong, a file whose tensors do not fill that
//! plan: missing stages, tensors no layer reads, kernels of another shape, a configuration
//! that describes no network, weights of another form.

mod common;

use common::{read, Tensors};
use repghost_runtime::{Model, NetConfig};

const NAME: &str = "repghostnet_035.safetensors";

/// The message of a refused file: one short line.
fn refused(t: &Tensors) -> String {
    match Model::from_bytes(&t.to_bytes()) {
        Ok(m) => panic!("{m:?} was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.contains('\n') && msg.len() < 300,
                "not one short line: {msg}"
            );
            msg
        }
    }
}

fn config(t: &Tensors) -> NetConfig {
    serde_json::from_str(&t.meta["config"]).unwrap()
}

fn with_config(mut t: Tensors, cfg: &NetConfig) -> Tensors {
    t.meta
        .insert("config".into(), serde_json::to_string(cfg).unwrap());
    t
}

#[test]
fn the_unaltered_file_loads() {
    let t = read(NAME);
    let m = Model::from_bytes(&t.to_bytes()).unwrap();
    assert_eq!(
        (m.in_chans(), m.num_classes(), m.name()),
        (3, 10, "repghostnet_035")
    );
}

#[test]
fn five_stages_and_a_final_conv_are_refused() {
    // Stages 5–8 dropped and the final conv renamed into their place: every shape still fits
    // its neighbour, but the plan of the stored configuration has nine stages.
    let mut t = read(NAME);
    t.map = std::mem::take(&mut t.map)
        .into_iter()
        .filter(|(k, _)| {
            !["blocks.5.", "blocks.6.", "blocks.7.", "blocks.8."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.replace("blocks.9.", "blocks.5."), v))
        .collect();
    let msg = refused(&t);
    assert!(
        msg.contains("missing tensor 'blocks.5.0.ghost1.primary_conv.0.weight'"),
        "{msg}"
    );

    // Tensors no layer reads are named, a few of them, with the count.
    let mut t = read(NAME);
    let extra = t.map["classifier.bias"].clone();
    for i in 0..5 {
        t.map.insert(format!("extra.{i}"), extra.clone());
    }
    let msg = refused(&t);
    assert!(
        msg.contains("5 tensor(s)") && msg.contains("extra.0") && msg.contains("2 more"),
        "{msg}"
    );
}

#[test]
fn kernels_of_another_shape_are_refused() {
    // A 1×1 depthwise kernel (the probe that once ran the 5×5 kernel over a 1-tap weight).
    let mut t = read(NAME);
    let key = "blocks.0.0.ghost1.cheap_operation.weight";
    let c = t.map[key].0[0];
    t.map.insert(key.into(), (vec![c, 1, 1, 1], vec![0.5; c]));
    let msg = refused(&t);
    assert!(
        msg.contains(&format!("'{key}' is [{c}, 1, 1, 1]")) && msg.contains(&format!("needs [{c}, 1, 3, 3]")),
        "{msg}"
    );

    // A bias one value short.
    let mut t = read(NAME);
    let key = "blocks.3.0.se.conv_reduce.bias";
    let (shape, data) = t.map.get_mut(key).unwrap();
    data.pop();
    shape[0] -= 1;
    let msg = refused(&t);
    assert!(msg.contains(key), "{msg}");

    // A non-finite weight.
    let mut t = read(NAME);
    t.map.get_mut("conv_head.weight").unwrap().1[3] = f32::INFINITY;
    let msg = refused(&t);
    assert!(
        msg.contains("conv_head.weight") && msg.contains("NaN or infinite"),
        "{msg}"
    );
}

#[test]
fn a_configuration_that_describes_no_network_is_refused() {
    let t = read(NAME);
    let cfg = config(&t);
    for (bad, what) in [
        (cfg.clone().with_stem_stride(3), "stem stride 3"),
        (cfg.clone().with_in_chans(0), "0 input channels"),
    ] {
        let msg = refused(&with_config(read(NAME), &bad));
        assert!(msg.contains(what), "{msg}");
    }
    // Another class count: the plan asks for other shapes.
    let msg = refused(&with_config(read(NAME), &cfg.with_num_classes(12)));
    assert!(msg.contains("classifier"), "{msg}");
    // No configuration, or one that is not JSON.
    let mut t = read(NAME);
    t.meta.remove("config");
    assert!(refused(&t).contains("'config'"));
    let mut t = read(NAME);
    t.meta.insert("config".into(), "{not json".into());
    assert!(refused(&t).contains("'config'"));
}

#[test]
fn other_forms_and_foreign_files_are_refused() {
    let mut t = read(NAME);
    t.meta.insert("form".into(), "train".into());
    let msg = refused(&t);
    assert!(msg.contains("train") && msg.contains("repghost convert"), "{msg}");
    let mut t = read(NAME);
    t.meta.clear();
    assert!(refused(&t).contains("repghost convert"));
    // Load names the file in its message.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    let mut t = read(NAME);
    t.meta.insert("form".into(), "train".into());
    std::fs::write(&p, t.to_bytes()).unwrap();
    let err = Model::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("t.safetensors") && err.contains("repghost convert"),
        "{err}"
    );
}

/// A plan built by hand must still be one the engine can run: strides that disagree between a
/// block's paths are refused, not run.
#[test]
fn an_inconsistent_plan_is_refused() {
    let bytes = std::fs::read(common::fixture(NAME)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let cfg = config(&read(NAME));
    let plan = repghost_runtime::Plan::new(&cfg);
    assert!(Model::from_plan(&plan, "ok", &st).is_ok());
    let mut bad = plan.clone();
    bad.blocks[0].ghost1.cheap.stride = 2;
    let msg = Model::from_plan(&bad, "bad", &st).unwrap_err().to_string();
    assert!(msg.contains("block 0") && msg.contains("ghost1"), "{msg}");
    let mut bad = plan.clone();
    let strided = bad.blocks.iter().position(|b| b.stride == 2).unwrap();
    bad.blocks[strided].conv_dw.as_mut().unwrap().stride = 1;
    let msg = Model::from_plan(&bad, "bad", &st).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("block {strided}")) && msg.contains("shortcut stride"),
        "{msg}"
    );
}
