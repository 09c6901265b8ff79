//! Loader errors at the library level: missing and unexpected keys are named, NaN weights
//! are refused, ablations that share a state dict are reported as ambiguous, and the pickle
//! reader treats foreign objects as opaque and unknown opcodes as errors.

use std::path::Path;

use burn::tensor::Device;
use repghost::variants::resolve;
use repghost::weights::pickle::{self, Value};
use repghost::weights::{self, apply_state_dict, state_dict, Form, LoadOptions};
use repghost::{Error, Model};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(&manifest_dir()).join("tests/fixtures").join(name)
}

#[test]
fn missing_and_unexpected_keys_are_named() {
    let device = Device::flex();
    let cfg = resolve("ghostnet_050").unwrap().1.config(10);
    let model = Model::new(&cfg, &device);
    let mut sd = state_dict(&model, Form::Train);
    sd.remove("blocks.2.0.ghost1.primary_conv.0.weight");
    let extra = sd["conv_head.bias"].clone();
    sd.insert("head.fc.bias".into(), extra);
    let err = apply_state_dict(Model::new(&cfg, &device), &sd, Form::Train).unwrap_err();
    let text = err.join("; ");
    assert!(
        text.contains("missing blocks.2.0.ghost1.primary_conv.0.weight"),
        "{text}"
    );
    assert!(text.contains("unexpected head.fc.bias"), "{text}");
}

/// RepGhostNet 0.5× and its "wo" ablation (no identity shortcut) have the same keys and
/// shapes in every form but compute different functions: a file that does not say which it
/// holds is refused with one line asking for --model, and one that records its model (the
/// official training checkpoint's `arch`) loads as that model.
#[test]
fn a_state_dict_of_05x_or_its_wo_ablation_needs_a_name() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let cfg = resolve("repghostnet_050").unwrap().1.config(10);
    for form in [Form::Train, Form::Deploy] {
        let model = Model::with_form(&cfg, form, &device);
        let bytes = repghost::weights::safetensors_io::to_bytes_bare(&state_dict(&model, form)).unwrap();
        let path = dir.path().join(format!("bare_{}.safetensors", form.as_str()));
        std::fs::write(&path, bytes).unwrap();
        let err = weights::load(&path, &LoadOptions::default(), &device).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Ambiguous { .. }), "{text}");
        assert!(
            text.contains("repghostnet_050 and repghostnet_wo_0_5x")
                && text.contains("--model")
                && !text.contains('\n'),
            "{text}"
        );
        let opts = |m: &str| LoadOptions {
            model: Some(m.into()),
            ema: false,
        };
        let wo = weights::load(&path, &opts("repghostnet_wo_0_5x"), &device).unwrap();
        assert!(!wo.model.config().shortcut);
        assert!(
            weights::load(&path, &opts("repghostnet_0_5x"), &device)
                .unwrap()
                .model
                .config()
                .shortcut
        );
    }
    // The official checkpoint fixture records `arch: repghostnet_0_5x`.
    let named = weights::load(
        &fixture("repghostnet_050.pth.tar"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    assert_eq!(named.name, "repghostnet_050");
    assert!(named.model.config().shortcut);
}

#[test]
fn ablations_sharing_a_state_dict_are_ambiguous_without_model() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let cfg = resolve("repghostnet_norep_0_5x").unwrap().1.config(10);
    let model = Model::new(&cfg, &device);
    // Native file written without metadata: a bare safetensors state dict, as timm writes.
    let sd = state_dict(&model, Form::Train);
    let bytes = repghost::weights::safetensors_io::to_bytes_bare(&sd).unwrap();
    let path = dir.path().join("norep.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = weights::load(&path, &LoadOptions::default(), &device).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Ambiguous { .. }), "{text}");
    assert!(
        text.contains("repghostnet_repid_0_5x") && text.contains("repghostnet_norep_0_5x"),
        "{text}"
    );
    // Naming it resolves the ambiguity.
    let opts = LoadOptions {
        model: Some("repghostnet_norep_0_5x".into()),
        ema: false,
    };
    assert_eq!(
        weights::load(&path, &opts, &device).unwrap().name,
        "repghostnet_norep_0_5x"
    );
}

#[test]
fn training_checkpoint_objects_stay_opaque() {
    // The fixture's data.pkl holds an argparse.Namespace, optimizer state and AMP scaler.
    let bytes = std::fs::read(fixture("repghostnet_050.pth.tar")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl"))
        .unwrap()
        .to_string();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(&name).unwrap(), &mut pkl).unwrap();
    let root = pickle::parse(&pkl).unwrap();
    assert_eq!(
        root.get("args"),
        Some(&Value::Opaque("argparse.Namespace".into()))
    );
    assert_eq!(root.get("epoch"), Some(&Value::Int(3)));
    assert!(matches!(root.get("optimizer"), Some(Value::Dict(_))));
    // An opcode outside the state-dict subset is an error, not a guess.
    let mut bad = pkl.clone();
    bad.insert(2, b'i'); // INST (protocol 0 object construction)
    assert!(pickle::parse(&bad).unwrap_err().contains("unsupported opcode"));
    // Truncation anywhere is an error.
    assert!(pickle::parse(&pkl[..pkl.len() / 3]).is_err());
}

/// A checkpoint whose zip directory declares a 4 GB tensor record (a forged header or a zip
/// bomb) is refused from the header, before anything that size is allocated.
#[test]
fn absurd_declared_record_sizes_are_refused_before_allocation() {
    let mut bytes = std::fs::read(fixture("repghostnet_050.pth.tar")).unwrap();
    let huge = 0xFFFF_FFF0u32.to_le_bytes();
    let mut patched = 0;
    let mut i = 0;
    while i + 46 < bytes.len() {
        let sig = &bytes[i..i + 4];
        // Local file header: size at 22, name length at 26, name at 30.
        // Central directory header: size at 24, name length at 28, name at 46.
        let (size_at, len_at, name_at) = match sig {
            b"PK\x03\x04" => (22, 26, 30),
            b"PK\x01\x02" => (24, 28, 46),
            _ => {
                i += 1;
                continue;
            }
        };
        let n = u16::from_le_bytes([bytes[i + len_at], bytes[i + len_at + 1]]) as usize;
        let name = String::from_utf8_lossy(&bytes[i + name_at..i + name_at + n]).into_owned();
        if name.ends_with("/data/0") {
            bytes[i + size_at..i + size_at + 4].copy_from_slice(&huge);
            patched += 1;
        }
        i += 4;
    }
    assert_eq!(patched, 2, "fixture layout changed");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.pth.tar");
    std::fs::write(&path, &bytes).unwrap();
    let err = weights::load(&path, &LoadOptions::default(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.pth.tar") && err.contains("data/0") && err.contains("declares"),
        "{err}"
    );
}

/// A pickle that doubles a list through the memo forty times (a "billion laughs": 2^40 nodes
/// from 200 bytes) is stopped by the copy budget instead of exhausting memory.
#[test]
fn self_amplifying_pickles_are_stopped() {
    let mut p = vec![0x80, 0x02, b']', b'q', 0];
    for _ in 0..40 {
        p.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
    }
    p.push(b'.');
    let err = pickle::parse(&p).unwrap_err();
    assert!(err.contains("budget"), "{err}");
    // The same shape, ten doublings deep, is fine.
    let mut q = vec![0x80, 0x02, b']', b'q', 0];
    for _ in 0..10 {
        q.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
    }
    q.push(b'.');
    assert!(matches!(pickle::parse(&q), Ok(Value::List(_))));
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
