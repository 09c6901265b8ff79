//! The deploy runtime (`repghost-runtime`) against burn's deploy forward: representative widths, the ablations and
//! GhostNet, batch 1, 3 and 32, odd input sizes, NCHW and NHWC input, feature maps. Buffers are
//! poisoned with NaN before each run, so an element the engine forgot to write shows up.

use burn::tensor::{Device, Tensor, TensorData};
use repghost::metrics::rel_diff as rel;
use repghost::random::{calibrated, Rng};
use repghost::variants::resolve;
use repghost::weights::safetensors_io::{to_bytes, Meta};
use repghost::weights::{self, state_dict, Form, LoadOptions, Storage};
use repghost::Model as BurnModel;
use repghost_runtime::{Layout, Model};

fn deploy(name: &str, seed: u64) -> (BurnModel, Model) {
    let cfg = resolve(name).unwrap().1.config(10);
    let burn = calibrated(&cfg, seed, 64).reparameterize();
    let rt = repghost::engine::to_runtime(&burn, Form::Deploy, name).unwrap();
    (burn, rt)
}

fn input(shape: [usize; 4], seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    r.normals(shape.iter().product())
}

fn burn_logits(m: &BurnModel, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &Device::flex());
    m.forward(t)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

fn to_nhwc(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                y[(i * h * w + p) * c + ch] = x[(i * c + ch) * h * w + p];
            }
        }
    }
    y
}

/// Representatives: the smallest and largest official widths, 1.11× (channel counts that are
/// no multiple of 8, so every vector tail), the three ablations (different fusion branches)
/// and GhostNet (concatenation).
const REPRESENTATIVES: [&str; 8] = [
    "repghostnet_050",
    "repghostnet_111",
    "repghostnet_200",
    "repghostnet_repid_0_5x",
    "repghostnet_norep_0_5x",
    "repghostnet_wo_0_5x",
    "ghostnet_050",
    "ghostnet_100",
];

#[test]
fn representatives_match_burn_at_batch_1_and_3() {
    for name in REPRESENTATIVES {
        let (burn, rt) = deploy(name, 3);
        for shape in [[1, 3, 64, 64], [3, 3, 64, 64]] {
            let x = input(shape, 5);
            let want = burn_logits(&burn, &x, shape);
            let mut ws = rt.workspace(shape[0], shape[2], shape[3]).unwrap();
            rt.poison(&mut ws);
            let got = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
            assert!(got.iter().all(|v| v.is_finite()), "{name}: unwritten output");
            let e = rel(&got, &want);
            assert!(e < 1e-4, "{name} {shape:?}: relative error {e:.2e}");
        }
    }
}

#[test]
fn odd_sizes_nhwc_input_and_batch_32() {
    for (name, shape) in [
        ("repghostnet_100", [2, 3, 193, 257]),
        ("ghostnet_100", [1, 3, 97, 75]),
        ("repghostnet_050", [32, 3, 32, 32]),
        ("repghostnet_wo_0_5x", [1, 3, 33, 47]),
    ] {
        let (burn, rt) = deploy(name, 8);
        let x = input(shape, 9);
        let want = burn_logits(&burn, &x, shape);
        let mut ws = rt.workspace(shape[0], shape[2], shape[3]).unwrap();
        rt.poison(&mut ws);
        let a = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
        assert!(
            rel(&a, &want) < 1e-4,
            "{name} {shape:?} NCHW: {:.2e}",
            rel(&a, &want)
        );
        rt.poison(&mut ws);
        let b = rt
            .run(&mut ws, &to_nhwc(&x, shape), Layout::Nhwc)
            .unwrap()
            .to_vec();
        assert!(
            rel(&b, &want) < 1e-4,
            "{name} {shape:?} NHWC: {:.2e}",
            rel(&b, &want)
        );
    }
}

#[test]
fn feature_maps_match_burn_pyramid() {
    let (burn, rt) = deploy("repghostnet_080", 2);
    let shape = [2, 3, 96, 128];
    let x = input(shape, 4);
    let t = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &Device::flex());
    let want = burn.forward_pyramid(t);
    let mut ws = rt.workspace(2, 96, 128).unwrap();
    rt.poison(&mut ws);
    let got = rt.features(&mut ws, &x, Layout::Nchw).unwrap();
    assert_eq!(got.len(), 3);
    for (f, w) in got.iter().zip(want) {
        let [n, c, h, ww] = w.dims();
        assert_eq!((f.n, f.c, f.h, f.w), (n, c, h, ww));
        let w = to_nhwc(
            &w.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
            [n, c, h, ww],
        );
        assert!(
            rel(&f.data, &w) < 1e-4,
            "stride {}: {:.2e}",
            f.stride,
            rel(&f.data, &w)
        );
    }
    assert_eq!(got.iter().map(|f| f.stride).collect::<Vec<_>>(), [8, 16, 32]);
}

#[test]
fn bad_inputs_and_files_are_errors() {
    let (_, rt) = deploy("repghostnet_050", 1);
    let mut ws = rt.workspace(1, 32, 32).unwrap();
    assert!(rt.run(&mut ws, &[0.0; 10], Layout::Nchw).is_err());
    let mut x = vec![0.0; 3 * 32 * 32];
    x[7] = f32::NAN;
    assert!(rt
        .run(&mut ws, &x, Layout::Nchw)
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    assert!(rt.workspace(0, 32, 32).is_err());
    assert!(Model::from_bytes(b"nonsense").is_err());
    // Train-form weights are refused with a pointer to `repghost convert`.
    let cfg = resolve("repghostnet_050").unwrap().1.config(10);
    let train = BurnModel::new(&cfg, &Device::flex());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    weights::save(&train, "repghostnet_050", Form::Train, None, Storage::F32, &p).unwrap();
    let err = Model::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("repghost convert") && err.contains("t.safetensors"),
        "{err}"
    );
}

#[test]
fn threads_split_batches_and_rows_without_changing_results() {
    let (burn, rt) = deploy("repghostnet_130", 6);
    for (batch, threads) in [(5, 2), (1, 2), (3, 3)] {
        let shape = [batch, 3, 96, 96];
        let x = input(shape, 12);
        let want = burn_logits(&burn, &x, shape);
        let mut ws = rt.workspace_threads(batch, 96, 96, threads).unwrap();
        rt.poison(&mut ws);
        let got = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
        assert!(
            rel(&got, &want) < 1e-4,
            "batch {batch} threads {threads}: {:.2e}",
            rel(&got, &want)
        );
        let single = {
            let mut ws1 = rt.workspace(batch, 96, 96).unwrap();
            rt.features(&mut ws1, &x, Layout::Nchw).unwrap().to_vec()
        };
        rt.poison(&mut ws);
        let f = rt.features(&mut ws, &x, Layout::Nchw).unwrap();
        for (a, b) in f.iter().zip(&single) {
            assert_eq!((a.n, a.h, a.w, a.c), (b.n, b.h, b.w, b.c));
            assert!(
                rel(&a.data, &b.data) < 1e-5,
                "features, batch {batch} threads {threads}"
            );
        }
    }
}

/// Every RepGhost bottleneck depth-first (`depth_first_min = 0`, so the SE splits, the stride-2
/// chains with 3×3 and 5×5 kernels and all three shortcuts run that way even at small sizes)
/// against layer by layer and burn: odd sizes whose strips end mid-map, one and two threads
/// (the rows of every chain split between them), the `wo` ablation (no shortcut).
#[test]
fn depth_first_matches_layer_by_layer_and_burn() {
    for (name, shape) in [
        ("repghostnet_111", [1, 3, 97, 75]),
        ("repghostnet_050", [1, 3, 130, 66]),
        ("repghostnet_wo_0_5x", [1, 3, 61, 93]),
        ("repghostnet_200", [2, 3, 64, 64]),
    ] {
        let (burn, rt) = deploy(name, 21);
        let x = input(shape, 22);
        let want = burn_logits(&burn, &x, shape);
        for threads in [1, 2] {
            let mut results = Vec::new();
            for min in [0, usize::MAX] {
                let mut ws = rt
                    .workspace_threads(shape[0], shape[2], shape[3], threads)
                    .unwrap();
                ws.depth_first_min = min;
                rt.poison(&mut ws);
                let got = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
                let e = rel(&got, &want);
                assert!(e < 1e-4, "{name} {shape:?} threads {threads} min {min}: {e:.2e}");
                results.push(got);
            }
            let e = rel(&results[0], &results[1]);
            assert!(e < 1e-5, "{name}: depth-first against layer by layer {e:.2e}");
        }
    }
}

/// f16 storage: the file holds every deploy tensor rounded to the nearest f16, and both
/// engines read back exactly those values (the runtime's logits equal, bit for bit, those of
/// an f32 file of the rounded weights; burn's loaded state dict is the rounded one), in half
/// the bytes. A value beyond f16's range is refused, naming its tensor.
#[test]
fn f16_files_hold_the_rounded_weights_and_both_engines_read_them() {
    let name = "repghostnet_050";
    let cfg = resolve(name).unwrap().1.config(10);
    let deploy = calibrated(&cfg, 3, 64).reparameterize();
    let dir = tempfile::tempdir().unwrap();
    let (p16, p32) = (dir.path().join("h.safetensors"), dir.path().join("f.safetensors"));
    weights::save(&deploy, name, Form::Deploy, None, Storage::F16, &p16).unwrap();
    weights::save(&deploy, name, Form::Deploy, None, Storage::F32, &p32).unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(&p16) / size(&p32);
    assert!(
        (0.5..0.51).contains(&ratio),
        "f16 file is {ratio:.3} of the f32 one"
    );

    let mut rounded = state_dict(&deploy, Form::Deploy);
    for t in rounded.values_mut() {
        for v in &mut t.data {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }
    let back = weights::load(&p16, &LoadOptions::default(), &Device::flex()).unwrap();
    assert!(
        state_dict(&back.model, Form::Deploy) == rounded,
        "burn read other values"
    );

    let meta = Meta {
        model: name.into(),
        config: cfg.clone(),
        form: Form::Deploy,
        preprocess: None,
    };
    let want_rt = Model::from_bytes(&to_bytes(&rounded, &meta, Storage::F32).unwrap()).unwrap();
    let rt = Model::load(&p16).unwrap();
    let shape = [2, 3, 64, 64];
    let x = input(shape, 5);
    let mut ws = rt.workspace(2, 64, 64).unwrap();
    let got = rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
    let want = want_rt.run(&mut ws, &x, Layout::Nchw).unwrap().to_vec();
    assert_eq!(got, want);
    // What the rounding costs on these random weights: 7.8e-3 of the largest logit, measured.
    let full = burn_logits(&deploy, &x, shape);
    let err = rel(&got, &full);
    assert!(err < 1e-2, "f16 weights move the logits by {err:.2e} relative");

    let mut wide = rounded;
    wide.get_mut("classifier.bias").unwrap().data[3] = 1e5;
    let msg = to_bytes(&wide, &meta, Storage::F16).unwrap_err().to_string();
    assert!(msg.contains("'classifier.bias'") && msg.contains("f16"), "{msg}");
}
