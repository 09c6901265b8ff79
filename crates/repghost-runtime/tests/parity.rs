//! The runtime against burn's deploy forward, through committed fixtures (so that this test
//! needs no deep-learning dependency): RepGhostNet 0.35× and its "wo" ablation, GhostNet 0.35×
//! on grey input with a stride-1 stem; batch 1, 3 and 32, odd sizes, NCHW and NHWC input, one
//! to three threads, depth-first and layer-by-layer execution, the feature pyramid. Buffers
//! are filled with NaN before each run, so an element the engine forgot to write shows up.
//! (`crates/repghost/tests/runtime_parity.rs` compares more widths with burn directly.)

mod common;

use common::{read, rel, to_nhwc};
use repghost_runtime::{Layout, Model, NetConfig, Plan};
use safetensors::SafeTensors;

/// Relative to the largest logit: f32 rounding of two summation orders, measured at most
/// 1.9e-6 on an AMD EPYC Zen 3 (AVX2 and portable levels).
const TOL: f64 = 1e-5;

fn model(name: &str) -> Model {
    Model::load(&common::fixture(&format!("{name}.safetensors"))).unwrap()
}

/// The same tensors planned as the "wo" ablation (no identity shortcut).
fn wo_model(name: &str) -> Model {
    let bytes = std::fs::read(common::fixture(&format!("{name}.safetensors"))).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let cfg: NetConfig = serde_json::from_str(&meta["config"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    Model::from_plan(&Plan::new(&cfg.with_shortcut(false)), "wo", &st).unwrap()
}

/// Logits of `x` on a poisoned workspace of `threads` threads.
fn run(
    m: &Model,
    x: &[f32],
    shape: [usize; 4],
    threads: usize,
    depth_first_min: Option<usize>,
    layout: Layout,
) -> Vec<f32> {
    let mut ws = m
        .workspace_threads(shape[0], shape[2], shape[3], threads)
        .unwrap();
    if let Some(d) = depth_first_min {
        ws.depth_first_min = d;
    }
    m.poison(&mut ws);
    let input = match layout {
        Layout::Nchw => x.to_vec(),
        Layout::Nhwc => to_nhwc(x, shape),
    };
    m.run(&mut ws, &input, layout).unwrap().to_vec()
}

/// Logits of the first image of the batch `x` alone, on `threads` threads.
fn first_image(m: &Model, x: &[f32], shape: [usize; 4], threads: usize) -> Vec<f32> {
    let per = shape[1] * shape[2] * shape[3];
    run(
        m,
        &x[..per],
        [1, shape[1], shape[2], shape[3]],
        threads,
        None,
        Layout::Nchw,
    )
}

#[test]
fn batches_of_1_3_and_32_in_both_layouts() {
    for (name, cases) in [
        ("repghostnet_035", &["a", "b32"][..]),
        ("ghostnet_035_grey", &["a", "odd"][..]),
    ] {
        let m = model(name);
        let e = read(&format!("{name}.expected.safetensors"));
        for case in cases {
            let (x, shape) = (e.get(&format!("{case}.x")), e.shape4(&format!("{case}.x")));
            let want = e.get(&format!("{case}.logits"));
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let got = run(&m, x, shape, 1, None, layout);
                let d = rel(&got, want);
                assert!(d < TOL, "{name} {case} {layout:?}: {d:.2e}");
            }
            // The calibrated nets tell their inputs apart: a test on a net whose logits hardly
            // depend on the input would prove little.
            let nc = m.num_classes();
            if shape[0] > 1 {
                let apart = rel(&want[..nc], &want[nc..2 * nc]);
                assert!(
                    apart > 0.05,
                    "{name} {case}: two images give nearly the same logits ({apart:.2e})"
                );
            }
            let got = first_image(&m, x, shape, 1);
            let d = rel(&got, &want[..nc]);
            assert!(d < TOL, "{name} {case}, first image alone: {d:.2e}");
        }
    }
}

/// Every RepGhost bottleneck depth-first (`depth_first_min = 0`: the SE splits, stride-2
/// chains with 3×3 and 5×5 kernels, all three kinds of shortcut) and layer by layer, at odd
/// sizes whose strips end mid-map, on one and two threads.
#[test]
fn depth_first_and_layer_by_layer_match_burn_at_odd_sizes() {
    let e = read("repghostnet_035.expected.safetensors");
    for (m, prefix) in [
        (model("repghostnet_035"), ""),
        (wo_model("repghostnet_035"), "wo."),
    ] {
        for case in ["a", "odd"] {
            let (x, shape) = (e.get(&format!("{case}.x")), e.shape4(&format!("{case}.x")));
            let want = e.get(&format!("{prefix}{case}.logits"));
            // Batches split between threads run one image at a time; a single image splits
            // its rows: both come from running each image of the batch alone, too.
            for threads in [1, 2] {
                let mut results = Vec::new();
                for min in [0, usize::MAX] {
                    let got = run(&m, x, shape, threads, Some(min), Layout::Nchw);
                    let d = rel(&got, want);
                    assert!(
                        d < TOL,
                        "{prefix}{case} threads {threads} depth-first min {min}: {d:.2e}"
                    );
                    results.push(got);
                }
                let d = rel(&results[0], &results[1]);
                assert!(
                    d < 1e-5,
                    "{prefix}{case}: depth-first against layer by layer {d:.2e}"
                );
            }
        }
    }
    // The wo ablation computes something else: its logits are not the standard net's.
    let d = rel(e.get("wo.a.logits"), e.get("a.logits"));
    assert!(
        d > 0.01,
        "the fixture's wo logits equal the standard ones ({d:.2e})"
    );
}

#[test]
fn threads_split_batches_and_rows_without_changing_results() {
    let m = model("repghostnet_035");
    let e = read("repghostnet_035.expected.safetensors");
    let (x, shape) = (e.get("a.x"), e.shape4("a.x"));
    let want = e.get("a.logits");
    for threads in [2, 3] {
        let got = run(&m, x, shape, threads, None, Layout::Nchw);
        let d = rel(&got, want);
        assert!(d < TOL, "batch 3 on {threads} threads: {d:.2e}");
    }
    let got = first_image(&m, x, shape, 2);
    let d = rel(&got, &want[..m.num_classes()]);
    assert!(d < TOL, "one image on 2 threads: {d:.2e}");
}

/// A split workspace keeps its threads and buffers between calls: the same workspace run on
/// the batch and on the batch in another order gives each image its own logits, feature maps
/// equal those of the whole batch run layer by layer, and a profile covers every share.
#[test]
fn a_split_workspace_serves_many_calls() {
    let m = model("repghostnet_035");
    let e = read("repghostnet_035.expected.safetensors");
    let (x, shape) = (e.get("a.x"), e.shape4("a.x"));
    let (n, per, nc) = (shape[0], shape[1] * shape[2] * shape[3], m.num_classes());
    let want = e.get("a.logits");
    let mut ws = m.workspace_threads(n, shape[2], shape[3], 2).unwrap();
    assert_eq!(ws.threads(), 2);
    ws.profile = Some(Default::default());
    let order: Vec<usize> = (0..n).rev().collect();
    let reordered: Vec<f32> = order
        .iter()
        .flat_map(|&i| x[i * per..(i + 1) * per].to_vec())
        .collect();
    for round in 0..2 {
        m.poison(&mut ws);
        let got = m.run(&mut ws, x, Layout::Nchw).unwrap().to_vec();
        assert!(rel(&got, want) < TOL, "round {round}");
        let got = m.run(&mut ws, &reordered, Layout::Nchw).unwrap().to_vec();
        for (j, &i) in order.iter().enumerate() {
            let d = rel(&got[j * nc..(j + 1) * nc], &want[i * nc..(i + 1) * nc]);
            assert!(d < TOL, "round {round}, image {i} at {j}: {d:.2e}");
        }
    }
    let kinds: Vec<&str> = ws.profile.as_ref().unwrap().entries.iter().map(|e| e.0).collect();
    for kind in ["stem", "pointwise", "depthwise", "pool", "head"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let whole = {
        let mut one = m.workspace(n, shape[2], shape[3]).unwrap();
        m.features(&mut one, x, Layout::Nchw).unwrap().to_vec()
    };
    m.poison(&mut ws);
    let split = m.features(&mut ws, x, Layout::Nchw).unwrap();
    for (k, (a, b)) in split.iter().zip(&whole).enumerate() {
        assert_eq!((a.n, a.h, a.w, a.c), (b.n, b.h, b.w, b.c));
        assert!(rel(&a.data, &b.data) < TOL, "map {k}");
    }
}

#[test]
fn feature_maps_match_burns_pyramid() {
    let m = model("repghostnet_035");
    let e = read("repghostnet_035.expected.safetensors");
    let (x, shape) = (e.get("feat.x"), e.shape4("feat.x"));
    for threads in [1, 2] {
        let mut ws = m
            .workspace_threads(shape[0], shape[2], shape[3], threads)
            .unwrap();
        m.poison(&mut ws);
        let got = m.features(&mut ws, x, Layout::Nchw).unwrap();
        assert_eq!(got.iter().map(|f| f.stride).collect::<Vec<_>>(), [8, 16, 32]);
        for (k, f) in got.iter().enumerate() {
            let key = format!("feat.features.{k}");
            assert_eq!(vec![f.n, f.h, f.w, f.c], e.map[&key].0, "map {k}");
            let d = rel(&f.data, e.get(&key));
            assert!(
                d < TOL,
                "map {k} (stride {}), {threads} thread(s): {d:.2e}",
                f.stride
            );
        }
    }
    let mut ws = m.workspace(shape[0], shape[2], shape[3]).unwrap();
    let logits = m.run(&mut ws, x, Layout::Nchw).unwrap();
    assert!(rel(logits, e.get("feat.logits")) < TOL);
}

#[test]
fn bad_inputs_are_errors() {
    let m = model("repghostnet_035");
    let mut ws = m.workspace(1, 32, 32).unwrap();
    assert!(m.run(&mut ws, &[0.0; 10], Layout::Nchw).is_err());
    let mut x = vec![0.0; 3 * 32 * 32];
    x[7] = f32::NAN;
    let err = m.run(&mut ws, &x, Layout::Nchw).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
    assert!(m.workspace(0, 32, 32).is_err());
    assert!(Model::from_bytes(b"nonsense").is_err());
    assert_eq!((ws.batch(), ws.input_hw(), ws.threads()), (1, (32, 32), 1));
}
