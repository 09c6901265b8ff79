//! Re-parameterization arithmetic (paper §3.3): pure functions on host data, and the one
//! place where a burn `Conv2d` + `BatchNorm` pair becomes a single conv with bias.
//!
//! Mirrors `_fuse_bn_tensor` and `_pad_1x1_to_3x3_tensor` of the reference `RepGhostModule`,
//! extended to every conv-BN pair in the net (the reference folds only the cheap branch).

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::tensor::{Tensor, TensorData};

/// Host copy of a tensor in f64, whatever its dtype (f32 values convert exactly).
pub(crate) fn host64<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.to_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("float tensor converts to f64")
}

/// BatchNorm statistics and affine parameters in inference form.
#[derive(Clone, Debug)]
pub struct BnParams {
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub eps: f64,
}

impl BnParams {
    pub fn from_module(bn: &BatchNorm) -> Self {
        BnParams {
            gamma: host64(&bn.gamma.val()),
            beta: host64(&bn.beta.val()),
            mean: host64(&bn.running_mean.value()),
            var: host64(&bn.running_var.value()),
            eps: bn.epsilon,
        }
    }

    /// Per-channel scale `gamma / sqrt(var + eps)` and shift `beta - mean * scale`.
    pub fn scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(&g, &v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((&b, &m), &s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// Folds `bn(conv(x) + bias)` into one conv: `W' = W * s`, `b' = (b - mean) * s + beta`.
/// `weight` is `[out, in/groups, kh, kw]` flattened. Works in f64 so that several branches
/// are summed before the one rounding to the model's dtype.
pub fn fold_bn(weight: &[f64], out_ch: usize, bias: Option<&[f64]>, bn: &BnParams) -> (Vec<f64>, Vec<f64>) {
    let per = weight.len() / out_ch;
    let (scale, shift) = bn.scale_shift();
    let w = weight
        .iter()
        .enumerate()
        .map(|(i, &v)| v * scale[i / per])
        .collect();
    let b = (0..out_ch)
        .map(|o| shift[o] + bias.map_or(0.0, |b| b[o]) * scale[o])
        .collect();
    (w, b)
}

/// The depthwise `k×k` kernel of the identity map: 1 at the centre of each channel's kernel
/// (the reference builds a 1×1 identity and pads it to 3×3).
pub fn identity_dw_kernel(channels: usize, k: usize) -> Vec<f64> {
    let mut w = vec![0.0; channels * k * k];
    for c in 0..channels {
        w[c * k * k + (k / 2) * k + k / 2] = 1.0;
    }
    w
}

pub(crate) fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// A copy of `conv` with the given weight and bias (same geometry), rounded once to the
/// dtype of the original weight.
pub(crate) fn conv_with(conv: &Conv2d, weight: Vec<f64>, bias: Vec<f64>) -> Conv2d {
    let w = conv.weight.val();
    let (device, dtype, shape) = (w.device(), w.dtype(), w.dims());
    let out = shape[0];
    let weight = Tensor::<4>::from_data(
        TensorData::new(weight, shape).convert_dtype(dtype),
        (&device, dtype),
    );
    let bias = Tensor::<1>::from_data(
        TensorData::new(bias, [out]).convert_dtype(dtype),
        (&device, dtype),
    );
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride: conv.stride,
        kernel_size: conv.kernel_size,
        dilation: conv.dilation,
        groups: conv.groups,
        padding: conv.padding.clone(),
    }
}

/// `bn(conv(x))` → one conv with bias. Without a BN the conv is returned unchanged.
pub fn fold_conv_bn(conv: Conv2d, bn: Option<BatchNorm>) -> Conv2d {
    let Some(bn) = bn else { return conv };
    let w = host64(&conv.weight.val());
    let b = conv.bias.as_ref().map(|b| host64(&b.val()));
    let (w, b) = fold_bn(
        &w,
        conv.weight.dims()[0],
        b.as_deref(),
        &BnParams::from_module(&bn),
    );
    conv_with(&conv, w, b)
}

/// How far the logits of `deploy` (a folded form) are from those of `train` on `x`: the
/// largest |difference| over the largest |train logit|, NaN where either net produced a
/// non-finite value. The check `convert --check`, the trainer and the demo make after folding.
pub fn folding_error(train: &crate::Model, deploy: &crate::Model, x: Tensor<4>) -> crate::Result<f64> {
    let logits = |m: &crate::Model, x: Tensor<4>| {
        m.forward(x)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| crate::Error::Invalid(format!("reading back the logits: {e:?}")))
    };
    let a = logits(train, x.clone())?;
    let b = logits(deploy, x)?;
    if a.len() != b.len() {
        return Err(crate::Error::Invalid(format!(
            "the folded net gives {} logits, the train form {}",
            b.len(),
            a.len()
        )));
    }
    Ok(crate::metrics::rel_diff(&b, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_bn_applies_scale_and_shift() {
        let bn = BnParams {
            gamma: vec![2.0, 0.5],
            beta: vec![1.0, -1.0],
            mean: vec![0.5, 2.0],
            var: vec![4.0 - 1e-5, 1.0 - 1e-5],
            eps: 1e-5,
        };
        // two output channels of a 1-input 1x1 conv
        let (w, b) = fold_bn(&[3.0, 5.0], 2, Some(&[1.0, 0.0]), &bn);
        // var + eps is exactly 4 and 1 here
        assert!((w[0] - 3.0).abs() < 1e-12); // 3 * 2/2
        assert!((w[1] - 2.5).abs() < 1e-12); // 5 * 0.5/1
        assert!((b[0] - (1.0 + (1.0 - 0.5) * 1.0)).abs() < 1e-12);
        assert!((b[1] - (-1.0 - 2.0 * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn identity_kernel_has_one_centre_tap_per_channel() {
        let k = identity_dw_kernel(2, 3);
        assert_eq!(k.iter().sum::<f64>(), 2.0);
        assert_eq!(k[4], 1.0);
        assert_eq!(k[9 + 4], 1.0);
    }
}
