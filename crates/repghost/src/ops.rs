//! Every conv and BatchNorm of the nets goes through here. Pointwise convs and training-mode
//! BatchNorm are written with plain tensor ops, in forms that burn's CPU backend runs several
//! times faster than its own `conv2d` and `batch_norm_train`, forward and backward. The maths
//! is the same; only the memory traffic differs.
//!
//! - burn computes a conv's weight gradient as a second convolution over the input and the
//!   output gradient with their batch and channel axes swapped, and that swap copies both
//!   tensors; a 1×1 conv is a matrix product, whose gradients are matrix products over
//!   strided views (no copy).
//! - burn's default `batch_norm_train` (and its backward) reshapes `[N, C, H, W]` into
//!   `[C, N·H·W]` through an axis swap, which copies the activation twice each way; reducing
//!   `[N, C, H·W]` over its last axis and then its first needs no copy.
//!
//! On the CPU backend (`f32`), training-mode BatchNorm goes to [`crate::bnorm`] (one fused
//! op forward and backward) and depthwise convs to [`crate::dwconv`]; the stem conv, and
//! every conv on other backends, to burn's `Conv2d::forward`. The training
//! step's speed is measured by `repghost bench --engine train-step`.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::tensor::Tensor;

use crate::{bnorm, dwconv};

/// Spatial size (`H·W`) from which a 1×1 conv runs as one matrix product per image; below
/// it, as one product over all pixels of the batch (measured on a 2-core AVX2 CPU, batch 32:
/// the per-image form is 3–6× faster than burn's conv at 14×14 and 28×28, and slower than
/// the pixel form at 7×7 and below).
const PER_IMAGE_MIN_HW: usize = 100;

/// `conv.forward(x)`, through a matrix product when the conv is pointwise (1×1, stride 1,
/// no padding, one group).
pub(crate) fn conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    // `Same` pads a 1×1 stride-1 conv by nothing, as does `Valid`.
    let unpadded = !matches!(conv.padding, PaddingConfig2d::Explicit(a, b, c, d) if a + b + c + d > 0);
    let pointwise = conv.kernel_size == [1, 1] && conv.stride == [1, 1] && conv.groups == 1 && unpadded;
    if !pointwise {
        return match depthwise(conv, c) {
            Some((s, p)) if dwconv::supported(&x, &conv.weight.val()) => {
                let y = dwconv::depthwise_conv2d(x, conv.weight.val(), s, p);
                match &conv.bias {
                    Some(b) => y + b.val().reshape([1, c, 1, 1]),
                    None => y,
                }
            }
            _ => conv.forward(x),
        };
    }
    let [co, ci, _, _] = conv.weight.dims();
    let weight = conv.weight.val().reshape([co, ci]);
    let hw = h * w;
    let y = if hw >= PER_IMAGE_MIN_HW {
        // [1, co, c] · [n, c, hw] → [n, co, hw]
        let y = weight.unsqueeze::<3>().matmul(x.reshape([n, c, hw]));
        y.reshape([n, co, h, w])
    } else if hw == 1 {
        x.reshape([n, c])
            .matmul(weight.transpose())
            .reshape([n, co, 1, 1])
    } else {
        // [n·hw, c] · [c, co] → [n·hw, co]
        let pixels = x.reshape([n, c, hw]).swap_dims(1, 2).reshape([n * hw, c]);
        let y = pixels.matmul(weight.transpose());
        y.reshape([n, hw, co]).swap_dims(1, 2).reshape([n, co, h, w])
    };
    match &conv.bias {
        Some(b) => y + b.val().reshape([1, co, 1, 1]),
        None => y,
    }
}

/// Stride and padding of a depthwise conv (one channel per group, square kernel, square
/// stride, symmetric explicit padding, no dilation) over `c` input channels.
fn depthwise(conv: &Conv2d, c: usize) -> Option<(usize, usize)> {
    let [co, ci, kh, kw] = conv.weight.dims();
    let [s, s2] = conv.stride;
    let p = match conv.padding {
        PaddingConfig2d::Explicit(a, b, l, r) if a == b && a == l && a == r => a,
        PaddingConfig2d::Valid => 0,
        _ => return None,
    };
    let ok =
        ci == 1 && co == c && conv.groups == c && kh == kw && p < kh && s == s2 && conv.dilation == [1, 1];
    ok.then_some((s, p))
}

/// `bn.forward(x)`: batch statistics and a running-statistics update on an autodiff device,
/// running statistics elsewhere or when the layer is frozen. The update is PyTorch's:
/// `momentum` weights the new batch, and the running variance takes the unbiased batch
/// variance (× N/(N−1), N = n·h·w) while the normalization uses the biased one. (burn's own
/// `BatchNorm` keeps the biased variance, which would drift from PyTorch by momentum/(N−1)
/// per step.)
pub(crate) fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    let [n, c, h, w] = x.dims();
    let x = x.reshape([n, c, h * w]);
    let (y, mean, var) = if bnorm::supported(&x, &bn.gamma.val()) {
        let (mean, var) = bnorm::batch_stats(&x);
        let y = bnorm::batch_norm_train(
            x,
            bn.gamma.val(),
            bn.beta.val(),
            mean.clone(),
            var.clone(),
            bn.epsilon,
        );
        (y, mean, var)
    } else {
        batch_norm_tensor_ops(x, bn.gamma.val(), bn.beta.val(), bn.epsilon)
    };

    let device = y.device();
    let m = bn.momentum;
    let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let running = state.value_sync().to_device(&device).mul_scalar(1.0 - m);
        state.update(running.add(batch.detach().mul_scalar(m)).detach());
    };
    let count = (n * h * w) as f64;
    let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    update(&bn.running_mean, mean);
    update(&bn.running_var, var.mul_scalar(unbiased));
    y.reshape([n, c, h, w])
}

/// Training-mode BatchNorm of `x` `[n, c, hw]` written with tensor ops (the path of the GPU
/// backends): the output and the batch mean and biased variance (`[c]`).
pub(crate) fn batch_norm_tensor_ops(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
    let c = x.dims()[1];
    let mean = x.clone().mean_dim(2).mean_dim(0);
    let centred = x - mean.clone();
    let var = (centred.clone() * centred.clone()).mean_dim(2).mean_dim(0);
    let scale = (var.clone() + eps).sqrt().recip() * gamma.reshape([1, c, 1]);
    let y = centred * scale + beta.reshape([1, c, 1]);
    (y, mean.reshape([c]), var.reshape([c]))
}
