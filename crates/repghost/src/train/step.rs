//! One optimizer step's gradient: the batch split into contiguous parts, each part's forward
//! and backward pass on its own thread and device (data parallelism), and the parts'
//! gradients brought to the first device and summed in a fixed order, by burn's own
//! multi-device mechanism without collectives (`GradientsParams::to_device` onto the main
//! device, `GradientsAccumulator`), which works on every backend (several CUDA GPUs use
//! burn's all-reduce instead: [`super::ddp`]). BatchNorm normalizes each
//! part with its own statistics, as under DDP; burn's `RunningState` averages the running
//! statistics the parts computed.
//!
//! Every part but the first runs on a replica forked from the model (to its own device on
//! several GPUs, to the same one on the CPU), so that no two threads share autodiff leaves
//! and with them one burn autodiff graph; a fork keeps the parameter ids, by which the
//! gradients are matched.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Gradients, Tensor, TensorData};

use super::loss::smoothed_cross_entropy;
use crate::model::Model;

/// Host inputs of one step.
pub struct StepBatch<'a> {
    pub inputs: &'a [f32],
    /// `[n, C, H, W]`
    pub shape: [usize; 4],
    pub labels: &'a [usize],
    /// Dropout keep-mask `[n, features]` (0 or 1/(1 − p)), if dropout is on.
    pub keep: Option<(&'a [f32], usize)>,
}

/// Mean loss over the batch and the gradients of the mean loss, on `devices[0]` (the
/// model's); part `i` runs on `devices[i % devices.len()]`.
pub fn gradients(
    model: &Model,
    b: &StepBatch,
    workers: usize,
    smoothing: f64,
    devices: &[Device],
) -> (f32, GradientsParams) {
    let main = &devices[0];
    let n = b.shape[0];
    let parts = split(n, workers.max(devices.len()));
    let run = |i: usize, part: (usize, usize)| {
        let device = &devices[i % devices.len()];
        // Every part but the first runs on a fork: fresh autodiff leaves, even on the same
        // device. Parts that share leaves share one burn autodiff graph, and one part's
        // backward then frees steps another part is still recording ("graph tape has
        // already been consumed", seen under `workers = 2`). A fork keeps the BatchNorm
        // `RunningState`s shared, so the running statistics still average over the parts.
        let forked;
        let model = if i == 0 && device == main {
            model
        } else {
            forked = model.clone().fork(device);
            &forked
        };
        let (value, loss) = part_loss(model, b, part, parts.len(), smoothing, device);
        let grads = loss.backward();
        let to = (device != main).then_some(main);
        let g = match model {
            Model::RepGhost(m) => params(grads, m, to),
            Model::Ghost(m) => params(grads, m, to),
        };
        (value, g)
    };
    let results: Vec<(f32, GradientsParams)> = if parts.len() == 1 {
        vec![run(0, parts[0])]
    } else {
        on_threads(parts.len(), |i| run(i, parts[i]))
    };
    let loss = results.iter().map(|r| r.0).sum();
    let parts = results.into_iter().map(|r| r.1);
    let total = match model {
        Model::RepGhost(m) => sum(m, parts),
        Model::Ghost(m) => sum(m, parts),
    };
    (loss, total)
}

/// `f(0)`, …, `f(n − 1)`, each on a thread of its own, in that order.
pub(crate) fn on_threads<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("training worker panicked"))
            .collect()
    })
}

/// `n` samples in `min(parts, n)` contiguous ranges whose sizes differ by at most one, the
/// larger first.
pub(crate) fn split(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, n.max(1));
    let (per, rest) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + per + usize::from(i < rest);
            let range = (start, end);
            start = end;
            range
        })
        .filter(|(a, e)| e > a)
        .collect()
}

/// The forward pass of samples `a..e` of the batch on `device` and their loss, weighted by
/// their share of the batch when it has several parts, so that the sum of the parts'
/// gradients is the gradient of the batch's mean loss. Returns the weighted loss's value
/// and the tensor to call `backward` on.
pub(crate) fn part_loss(
    model: &Model,
    b: &StepBatch,
    (a, e): (usize, usize),
    parts: usize,
    smoothing: f64,
    device: &Device,
) -> (f32, Tensor<1>) {
    let [n, c, h, w] = b.shape;
    let m = e - a;
    let px = c * h * w;
    let x = Tensor::<4>::from_data(
        TensorData::new(b.inputs[a * px..e * px].to_vec(), [m, c, h, w]),
        device,
    );
    let keep = b
        .keep
        .map(|(k, f)| Tensor::<2>::from_data(TensorData::new(k[a * f..e * f].to_vec(), [m, f]), device));
    let logits = model.forward_train(x, keep);
    let loss = smoothed_cross_entropy(logits, &b.labels[a..e], smoothing);
    let value: f32 = loss.clone().into_scalar();
    if parts == 1 {
        return (value, loss);
    }
    let weight = m as f64 / n as f64;
    (value * weight as f32, loss.mul_scalar(weight))
}

/// burn's per-parameter gradients of `model` from a backward pass.
pub fn param_gradients(model: &Model, grads: Gradients) -> GradientsParams {
    match model {
        Model::RepGhost(m) => params(grads, m, None),
        Model::Ghost(m) => params(grads, m, None),
    }
}

/// burn's per-parameter gradients of `m` from a backward pass, moved onto `to` if given.
fn params<M: Module>(grads: Gradients, m: &M, to: Option<&Device>) -> GradientsParams {
    let g = GradientsParams::from_grads(grads, m);
    match to {
        Some(device) => g.to_device(device, m),
        None => g,
    }
}

/// The parts' gradients summed by burn's accumulator, in part order (deterministic).
fn sum<M: Module>(m: &M, parts: impl Iterator<Item = GradientsParams>) -> GradientsParams {
    let mut total = GradientsAccumulator::<M>::new();
    for g in parts {
        total.accumulate(m, g);
    }
    total.grads()
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_batch_in_balanced_contiguous_parts() {
        for n in 1..20 {
            for parts in 1..8 {
                let s = split(n, parts);
                assert_eq!(s.len(), parts.min(n), "{n} {parts}");
                let sizes: Vec<usize> = s.iter().map(|(a, e)| e - a).collect();
                assert!(
                    sizes.windows(2).all(|w| w[0] == w[1] || w[0] == w[1] + 1),
                    "{sizes:?}"
                );
                assert_eq!(s[0].0, 0);
                assert_eq!(s.last().unwrap().1, n);
                assert!(s.windows(2).all(|w| w[0].1 == w[1].0), "{s:?}");
                assert!(s.iter().all(|(a, e)| e > a), "{s:?}");
            }
        }
    }
}
