//! Times the pieces of one training step (forward, backward, update) on the CPU backend.
//! `cargo run --release -p repghost --example trainstep -- [width] [side] [batch] [stem_stride]`
//! (`DP=2` runs two data-parallel threads on half batches instead.)
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use repghost::train::loss::smoothed_cross_entropy;
use repghost::{Arch, Model, NetConfig};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let width: f64 = a.get(1).map_or(0.5, |s| s.parse().unwrap());
    let side: usize = a.get(2).map_or(28, |s| s.parse().unwrap());
    let batch: usize = a.get(3).map_or(128, |s| s.parse().unwrap());
    let stem: usize = a.get(4).map_or(1, |s| s.parse().unwrap());
    let dev = Device::flex().autodiff();
    let cfg = NetConfig::new(Arch::RepGhost, width)
        .with_num_classes(10)
        .with_in_chans(1)
        .with_stem_stride(stem);
    let model = Model::new(&cfg, &dev);
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let workers: usize = std::env::var("DP").ok().map_or(1, |v| v.parse().unwrap());
    if workers > 1 {
        let per = batch / workers;
        let labels: Vec<usize> = (0..per).map(|i| i % 10).collect();
        for it in 0..4 {
            let t0 = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..workers {
                    let m = model.clone();
                    let dev = dev.clone();
                    let labels = &labels;
                    s.spawn(move || {
                        let x = Tensor::<4>::random(
                            [per, 1, side, side],
                            burn::tensor::Distribution::Default,
                            &dev,
                        );
                        let loss = smoothed_cross_entropy(m.forward(x), labels, 0.1);
                        let _g = loss.backward();
                    });
                }
            });
            if it > 0 {
                println!(
                    "{workers} workers: {:.0} img/s",
                    batch as f64 / t0.elapsed().as_secs_f64()
                );
            }
        }
        return;
    }
    for it in 0..4 {
        let x = Tensor::<4>::random([batch, 1, side, side], burn::tensor::Distribution::Default, &dev);
        let t0 = Instant::now();
        let logits = model.forward(x);
        let loss = smoothed_cross_entropy(logits, &labels, 0.1);
        let _v: f32 = loss.clone().into_scalar();
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        drop(grads);
        if it > 0 {
            println!(
                "forward {:.1} ms, backward {:.1} ms, {:.0} img/s",
                (t1 - t0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                batch as f64 / (t2 - t0).as_secs_f64()
            );
        }
    }
}
