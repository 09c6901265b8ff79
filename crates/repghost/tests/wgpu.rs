//! burn's wgpu backend against its CPU backend (flex), on a real Vulkan device: Mesa's lavapipe
//! in CI (a software driver, hence the small models and inputs), a GPU's own driver where one
//! is at hand (`scripts/gpu_check.sh`). Our backend extensions (depthwise convolution,
//! training-mode BatchNorm) have CPU kernels only, so on wgpu these tests run their fallbacks
//! to burn's tensor ops. Built with the `wgpu` feature only:
//! `cargo test --release --workspace --features repghost-cli/wgpu --test wgpu`.
#![cfg(feature = "wgpu")]

use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use repghost::metrics::rel_diff as rel;
use repghost::random::{calibrated, Rng};
use repghost::train::sgd::{grads_in_visit_order, Sgd};
use repghost::train::step::{gradients, StepBatch};
use repghost::variants::resolve;
use repghost::weights::{state_dict, Form};
use repghost::Model;

fn gpu() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

fn logits(m: &Model, x: &[f32], shape: [usize; 4], device: &Device) -> Vec<f32> {
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), device);
    m.forward(t)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Largest difference between `a` and `b` over the larger of `b`'s largest value and `floor`:
/// the measure of `tests/train_parity.rs`, whose bounds these tests share.
fn scaled(a: &[f32], b: &[f32], floor: f32) -> f32 {
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / b.iter().fold(floor, |m, v| m.max(v.abs()))
}

#[test]
fn forward_on_wgpu_matches_the_cpu() {
    for name in ["repghostnet_050", "ghostnet_050"] {
        let cfg = resolve(name).unwrap().1.config(10);
        let train = calibrated(&cfg, 3, 32);
        let deploy = train.clone().reparameterize();
        let shape = [2, 3, 48, 48];
        let x = Rng::new(5).normals(shape.iter().product());
        for (form, m) in [("train", train), ("deploy", deploy)] {
            let cpu = logits(&m, &x, shape, &Device::flex());
            let on_gpu = logits(&m.clone().to_device(&gpu()), &x, shape, &gpu());
            let e = rel(&on_gpu, &cpu);
            eprintln!("{name} {form}: wgpu against the CPU {e:.2e}");
            // Measured on lavapipe: 0.8e-6–1.7e-6.
            assert!(e <= 1e-5, "{name} {form}: wgpu against the CPU {e:.2e}");
        }
    }
}

/// Host batch of `n` 1-channel 24×24 images with labels 0..3.
fn batch(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    (
        Rng::new(seed).normals(n * 24 * 24),
        (0..n).map(|i| i % 4).collect(),
    )
}

fn small_model(device: &Device) -> Model {
    let mut cfg = resolve("repghostnet_050").unwrap().1.config(4);
    cfg.in_chans = 1;
    device.seed(7);
    Model::new(&cfg, device)
}

/// Two SGD steps from the same weights on the CPU and on wgpu: the first loss (same weights)
/// within 1e-5 and the second within 1e-4, as in the PyTorch parity test
/// (`tests/train_parity.rs`); every tensor after the first step within 4e-4 of its largest
/// value (measured on lavapipe: 4.1e-5; the gradients' rounding, amplified by BatchNorms over
/// few values, carried into the update).
#[test]
fn training_steps_on_wgpu_match_the_cpu() {
    let cpu = Device::flex().autodiff();
    let dev = gpu().autodiff();
    let mut a = small_model(&cpu);
    let mut b = a.clone().fork(&dev);
    let (mut sa, mut sb) = (Sgd::new(0.9, true, 1e-4), Sgd::new(0.9, true, 1e-4));
    for step in 0..2 {
        let (x, y) = batch(8, 40 + step);
        let sbatch = StepBatch {
            inputs: &x,
            shape: [8, 1, 24, 24],
            labels: &y,
            keep: None,
        };
        let (la, ga) = gradients(&a, &sbatch, 1, 0.1, std::slice::from_ref(&cpu));
        let (lb, gb) = gradients(&b, &sbatch, 1, 0.1, std::slice::from_ref(&dev));
        let bound = if step == 0 { 1e-5 } else { 1e-4 };
        eprintln!("step {step}: loss {la} on the CPU, {lb} on wgpu");
        assert!(
            (la - lb).abs() <= bound * la.abs(),
            "step {step}: loss {la} on the CPU, {lb} on wgpu"
        );
        a = sa.step(a, ga, 0.05);
        b = sb.step(b, gb, 0.05);
        if step == 0 {
            let mut worst = 0f32;
            let (wa, wb) = (state_dict(&a, Form::Train), state_dict(&b, Form::Train));
            for (k, t) in wa.iter().filter(|(k, _)| !k.contains("running_")) {
                let d = scaled(&wb[k].data, &t.data, 1e-3);
                worst = worst.max(d);
                assert!(d < 4e-4, "{k} after one step: wgpu against the CPU {d:.2e}");
            }
            eprintln!("weights after one step: wgpu against the CPU, at most {worst:.2e}");
        }
    }
}

/// Data parallelism on wgpu: two replicas on the one adapter, their gradients gathered and
/// summed by burn, give the batch-weighted sum of each half's loss and gradients computed
/// alone (BatchNorm normalizes each half with its own statistics, as under DDP), and what the
/// same split gives on the CPU.
#[test]
fn two_replicas_on_wgpu_sum_their_halves() {
    let dev = gpu().autodiff();
    let model = small_model(&dev);
    let (x, y) = batch(8, 50);
    let part = |a: usize, e: usize| StepBatch {
        inputs: &x[a * 576..e * 576],
        shape: [e - a, 1, 24, 24],
        labels: &y[a..e],
        keep: None,
    };
    let flat = |m: &Model, g| -> Vec<f32> {
        grads_in_visit_order(m, &g)
            .into_iter()
            .flatten()
            .flat_map(|t| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap())
            .collect()
    };
    let one = std::slice::from_ref(&dev);
    let (l, g) = gradients(&model, &part(0, 8), 2, 0.1, &[dev.clone(), dev.clone()]);
    let (l1, g1) = gradients(&model, &part(0, 4), 1, 0.1, one);
    let (l2, g2) = gradients(&model, &part(4, 8), 1, 0.1, one);
    assert!(
        (l - 0.5 * (l1 + l2)).abs() <= 1e-5 * l.abs(),
        "loss {l} against halves {l1}, {l2}"
    );
    let g = flat(&model, g);
    let halves: Vec<f32> = flat(&model, g1)
        .iter()
        .zip(flat(&model, g2))
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let e = rel(&g, &halves);
    assert!(e <= 1e-6, "gradients against the halves' {e:.2e}");

    let cpu = Device::flex().autodiff();
    let on_cpu = model.clone().fork(&cpu);
    let (lc, gc) = gradients(&on_cpu, &part(0, 8), 2, 0.1, &[cpu.clone(), cpu.clone()]);
    assert!(
        (l - lc).abs() <= 1e-4 * lc.abs(),
        "two replicas: {l} on wgpu, {lc} on the CPU"
    );
    // Gradients through BatchNorms over few values: measured 1.2e-3 of the largest on
    // lavapipe.
    let d = scaled(&g, &flat(&on_cpu, gc), 1e-3);
    eprintln!("two replicas: loss {l} on wgpu, {lc} on the CPU; gradients {d:.2e}; halves {e:.2e}");
    assert!(d < 5e-3, "two replicas' gradients: wgpu against the CPU {d:.2e}");
}
