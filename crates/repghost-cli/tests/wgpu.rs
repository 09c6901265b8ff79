//! The CLI on burn's wgpu backend (Mesa's lavapipe in CI): training with two replicas on one
//! adapter against one device with the batch split the same way, and evaluation on wgpu
//! against the CPU. Built with the `wgpu` feature only:
//! `cargo test --release --workspace --features repghost-cli/wgpu --test wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use common::{repghost, s, write_idx};

/// `train_loss` of each epoch in a run's metrics.csv.
fn losses(run: &std::path::Path) -> Vec<f64> {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn train_and_eval_on_wgpu() {
    let data = tempfile::tempdir().unwrap();
    write_idx(data.path(), 64, 32);
    let out = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| {
        let run = out.path().join(name);
        let mut args = vec![
            "train",
            "--model",
            "repghostnet_025",
            "--data",
            s(data.path()),
            "--out",
            s(&run),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--device",
            "wgpu",
        ];
        args.extend(extra);
        let o = repghost(&args);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        run
    };
    let two = train("two", &["--devices", "2"]);
    let one = train("one", &["--devices", "1", "--workers", "2"]);
    let (l2, l1) = (losses(&two), losses(&one));
    assert_eq!(l2.len(), 2);
    for (a, b) in l2.iter().zip(&l1) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "--devices 2: {l2:?}, one device: {l1:?}"
        );
    }
    // Four classes of bars: two epochs learn something.
    assert!(l2[1] < l2[0], "{l2:?}");

    let eval = |device: &str| -> serde_json::Value {
        let o = repghost(&[
            "eval",
            "--weights",
            s(&two.join("deploy.safetensors")),
            "--data",
            s(data.path()),
            "--engine",
            "burn",
            "--device",
            device,
            "--format",
            "json",
        ]);
        assert!(
            o.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (gpu, cpu) = (eval("wgpu"), eval("cpu"));
    assert_eq!(gpu["images"], 32);
    assert_eq!(gpu["top1"], cpu["top1"]);
    let (a, b) = (gpu["loss"].as_f64().unwrap(), cpu["loss"].as_f64().unwrap());
    assert!(
        (a - b).abs() <= 1e-4 * b.abs(),
        "eval loss {a} on wgpu, {b} on the CPU"
    );
}
