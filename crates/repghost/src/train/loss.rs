//! Cross-entropy with label smoothing (timm `LabelSmoothingCrossEntropy`):
//! `(1 − ε) · NLL(y) + ε · mean_k(−log p_k)`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

/// `logits [N, K]`, `labels` of length N → scalar mean loss `[1]`.
pub fn smoothed_cross_entropy(logits: Tensor<2>, labels: &[usize], smoothing: f64) -> Tensor<1> {
    let [n, k] = logits.dims();
    let off = smoothing / k as f64;
    let mut target = vec![off as f32; n * k];
    for (i, &y) in labels.iter().enumerate() {
        target[i * k + y] += (1.0 - smoothing) as f32;
    }
    let target = Tensor::<2>::from_data(TensorData::new(target, [n, k]), &logits.device());
    let logp = log_softmax(logits, 1);
    (logp * target).sum_dim(1).mean().neg()
}
