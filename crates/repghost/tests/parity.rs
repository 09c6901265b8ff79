//! Parity with the PyTorch reference (fixtures written by scripts/make_fixtures.py with
//! torch 2.15 / timm 1.0.31): forward, EMA weights, official fused form, GhostNet, feature
//! maps, and our re-parameterized deploy form, all within 2e-5 relative (5.2e-6 at most
//! measured, on an AVX2 EPYC).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use repghost::metrics::rel_diff as rel_err;
use repghost::npy;
use repghost::weights::{self, Form, LoadOptions, Storage};
use repghost::{Error, Model};

fn fixture(name: &str) -> PathBuf {
    Path::new(&manifest_dir()).join("tests/fixtures").join(name)
}

fn input(device: &Device) -> Tensor<4> {
    let a = npy::read(&fixture("input.npy")).unwrap();
    let shape: [usize; 4] = a.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(a.data, shape), device)
}

fn logits(model: &Model, device: &Device) -> Vec<f32> {
    model
        .forward(input(device))
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

fn assert_close(got: &[f32], reference: &str, tol: f64) {
    let want = npy::read(&fixture(reference)).unwrap().data;
    let e = rel_err(got, &want);
    eprintln!("{reference}: {e:.3e}");
    assert!(e < tol, "{reference}: relative error {e:.3e}");
    // The fixture is only meaningful if the logits depend on the input.
    let (a, b) = want.split_at(want.len() / 2);
    assert!(
        rel_err(a, b) > 0.05,
        "{reference}: reference logits barely depend on the input"
    );
}

fn load(name: &str, model: Option<&str>, ema: bool) -> weights::Loaded {
    let opts = LoadOptions {
        model: model.map(String::from),
        ema,
    };
    weights::load(&fixture(name), &opts, &Device::flex()).unwrap()
}

#[test]
fn official_training_checkpoint_loads_detects_and_matches() {
    let device = Device::flex();
    let l = load("repghostnet_050.pth.tar", None, false);
    assert_eq!(l.name, "repghostnet_050");
    assert_eq!(l.form, Form::Train);
    assert_eq!(l.source, "state_dict");
    assert!(l.has_ema);
    assert_eq!(l.model.config().num_classes, 10);
    assert_close(&logits(&l.model, &device), "repghostnet_050_logits.npy", 2e-5);

    let deploy = l.model.reparameterize();
    assert_close(&logits(&deploy, &device), "repghostnet_050_logits.npy", 2e-5);
}

#[test]
fn ema_weights_are_selected_with_ema() {
    let device = Device::flex();
    let l = load("repghostnet_050.pth.tar", Some("repghostnet_0_5x"), true);
    assert_eq!(l.source, "state_dict_ema");
    let got = logits(&l.model, &device);
    assert_close(&got, "repghostnet_050_ema_logits.npy", 2e-5);
    let plain = npy::read(&fixture("repghostnet_050_logits.npy")).unwrap().data;
    assert!(
        rel_err(&got, &plain) > 0.1,
        "EMA logits should differ from the model's"
    );
}

#[test]
fn official_convert_output_of_any_width_loads_with_model() {
    let device = Device::flex();
    let err = weights::load(
        &fixture("repghostnet_0_2x_fused.pth"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains("--model"), "{err}");

    let l = load("repghostnet_0_2x_fused.pth", Some("repghostnet_0_2x"), false);
    assert_eq!(l.form, Form::Fused);
    assert_close(&logits(&l.model, &device), "repghostnet_0_2x_logits.npy", 2e-5);
    let deploy = l.model.reparameterize();
    assert_close(&logits(&deploy, &device), "repghostnet_0_2x_logits.npy", 2e-5);
}

#[test]
fn timm_ghostnet_safetensors_matches() {
    let device = Device::flex();
    let l = load("ghostnet_050.safetensors", None, false);
    assert_eq!(l.name, "ghostnet_050");
    assert_close(&logits(&l.model, &device), "ghostnet_050_logits.npy", 2e-5);
    let deploy = l.model.reparameterize();
    assert_close(&logits(&deploy, &device), "ghostnet_050_logits.npy", 2e-5);
}

#[test]
fn deploy_safetensors_roundtrip_keeps_logits_and_metadata() {
    let device = Device::flex();
    let l = load("repghostnet_050.pth.tar", None, false);
    let deploy = l.model.reparameterize();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deploy.safetensors");
    weights::save(&deploy, "repghostnet_050", Form::Deploy, None, Storage::F32, &out).unwrap();
    let back = weights::load(&out, &LoadOptions::default(), &device).unwrap();
    assert_eq!(back.form, Form::Deploy);
    assert_eq!(back.name, "repghostnet_050");
    assert_eq!(back.model.count([224, 224]), deploy.count([224, 224]));
    assert_close(&logits(&back.model, &device), "repghostnet_050_logits.npy", 2e-5);
    // Only the temp-and-rename result is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn pyramid_features_match_timm_features_only() {
    let device = Device::flex();
    let l = load("repghostnet_050.pth.tar", None, false);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let f = &reference["repghostnet_050_features"];
    let info = l.model.feature_info();
    for (i, (c, s)) in info.iter().enumerate() {
        assert_eq!(*c as u64, f["channels"][i].as_u64().unwrap());
        assert_eq!(*s as u64, f["reduction"][i].as_u64().unwrap());
    }
    for form in [l.model.clone(), l.model.reparameterize()] {
        let maps = form.forward_pyramid(input(&device));
        assert_eq!(maps.len(), 3);
        for (i, m) in maps.into_iter().enumerate() {
            let dims: Vec<u64> = m.dims().iter().map(|&d| d as u64).collect();
            let want_dims: Vec<u64> = f["shapes"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(dims, want_dims);
            let want: Vec<f32> = f["values"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = m.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let e = rel_err(&got, &want);
            assert!(e < 2e-5, "stride-{} map: relative error {e:.3e}", info[i].1);
        }
    }
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
