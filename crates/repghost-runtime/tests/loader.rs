//! The loader builds the network from the plan of the configuration in the file's metadata
//! and refuses, with one line naming what is wrong, a file whose tensors do not fill that
//! plan: missing stages, tensors no layer reads, kernels of another shape, a configuration
//! that describes no network.

use repghost::random::calibrated;
use repghost::variants::resolve;
use repghost::weights::safetensors_io::{self, Meta};
use repghost::weights::{state_dict, Form, StateDict};
use repghost_runtime::{Error, Model};

/// The deploy-form tensors and metadata of a randomly initialised `name`.
fn deploy(name: &str) -> (StateDict, Meta) {
    let cfg = resolve(name).unwrap().1.config(10);
    let model = calibrated(&cfg, 1, 32).reparameterize();
    let meta = Meta {
        model: name.to_string(),
        config: cfg,
        form: Form::Deploy,
        preprocess: None,
    };
    (state_dict(&model, Form::Deploy), meta)
}

fn load(sd: &StateDict, meta: &Meta) -> Result<Model, Error> {
    Model::from_bytes(&safetensors_io::to_bytes(sd, meta).unwrap())
}

/// The message of a refused file: one line.
fn refused(sd: &StateDict, meta: &Meta) -> String {
    match load(sd, meta) {
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

#[test]
fn the_unaltered_file_loads() {
    let (sd, meta) = deploy("repghostnet_050");
    let m = load(&sd, &meta).unwrap();
    assert_eq!(
        (m.in_chans(), m.num_classes(), m.name()),
        (3, 10, "repghostnet_050")
    );
}

#[test]
fn five_stages_and_a_final_conv_are_refused() {
    // Stages 5–8 dropped and the final conv renamed into their place: every shape still fits
    // its neighbour, but the plan of the stored configuration has nine stages.
    let (sd, meta) = deploy("repghostnet_050");
    let cut: StateDict = sd
        .into_iter()
        .filter(|(k, _)| {
            !["blocks.5.", "blocks.6.", "blocks.7.", "blocks.8."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, t)| (k.replace("blocks.9.", "blocks.5."), t))
        .collect();
    let msg = refused(&cut, &meta);
    assert!(
        msg.contains("missing tensor 'blocks.5.0.ghost1.primary_conv.0.weight'"),
        "{msg}"
    );
    // Tensors no layer reads are named, a few of them, with the count.
    let (mut sd, meta) = deploy("repghostnet_050");
    for i in 0..5 {
        sd.insert(format!("extra.{i}"), sd["classifier.bias"].clone());
    }
    let msg = refused(&sd, &meta);
    assert!(
        msg.contains("5 tensor(s)") && msg.contains("extra.0") && msg.contains("2 more"),
        "{msg}"
    );
}

#[test]
fn kernels_the_runtime_lacks_are_refused() {
    // A 1×1 depthwise kernel (the probe that once ran the 5×5 kernel over a 1-tap weight).
    let (mut sd, meta) = deploy("repghostnet_050");
    let key = "blocks.0.0.ghost1.cheap_operation.weight";
    let c = sd[key].shape[0];
    let mut t = sd[key].clone();
    t.shape = vec![c, 1, 1, 1];
    t.data.truncate(c);
    sd.insert(key.into(), t);
    let msg = refused(&sd, &meta);
    assert!(
        msg.contains("'blocks.0.0.ghost1.cheap_operation.weight' is [4, 1, 1, 1]")
            && msg.contains("needs [4, 1, 3, 3]"),
        "{msg}"
    );

    // A bias one value short.
    let (mut sd, meta) = deploy("repghostnet_050");
    let key = "blocks.3.0.se.conv_reduce.bias";
    let t = sd.get_mut(key).unwrap();
    t.data.pop();
    t.shape = vec![t.data.len()];
    let msg = refused(&sd, &meta);
    assert!(msg.contains(key), "{msg}");
}

#[test]
fn a_configuration_that_describes_no_network_is_refused() {
    let (sd, meta) = deploy("repghostnet_050");
    for (cfg, what) in [
        (meta.config.clone().with_stem_stride(3), "stem stride 3"),
        (meta.config.clone().with_in_chans(0), "0 input channels"),
    ] {
        let m = Meta {
            config: cfg,
            ..meta.clone()
        };
        let msg = refused(&sd, &m);
        assert!(msg.contains(what), "{msg}");
    }
    // Another width: the plan asks for other shapes.
    let m = Meta {
        config: meta.config.clone().with_num_classes(12),
        ..meta
    };
    let msg = refused(&sd, &m);
    assert!(msg.contains("classifier"), "{msg}");
}

#[test]
fn metadata_must_name_the_deploy_form() {
    let (sd, meta) = deploy("repghostnet_050");
    let bytes = safetensors_io::to_bytes(&sd, &meta).unwrap();
    assert!(Model::from_bytes(&bytes).is_ok());
    let train = Meta {
        form: Form::Train,
        ..meta
    };
    let msg = refused(&sd, &train);
    assert!(msg.contains("train"), "{msg}");
}
