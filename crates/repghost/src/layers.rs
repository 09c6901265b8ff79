//! Small building blocks shared by both module kinds: conv construction, conv+BN pairs,
//! squeeze-excite, the classifier and the activations.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::{hard_sigmoid, hard_swish, leaky_relu, relu};
use burn::tensor::{Device, Tensor};

use crate::config::{make_divisible, Activation};
use crate::ops;
use crate::reparam::fold_conv_bn;

/// A `k×k` conv with PyTorch's symmetric `k/2` padding.
pub(crate) fn conv2d(
    device: &Device,
    [cin, cout]: [usize; 2],
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
) -> Conv2d {
    let p = (k - 1) / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .init(device)
}

pub(crate) fn bn(device: &Device, c: usize, momentum: f64) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_momentum(momentum)
        .with_epsilon(repghost_plan::BN_EPSILON)
        .init(device)
}

pub(crate) fn activate<const D: usize>(act: Activation, x: Tensor<D>) -> Tensor<D> {
    match act {
        Activation::Relu => relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu => leaky_relu(x, 0.01),
        Activation::HardSwish => hard_swish(x),
    }
}

/// PyTorch `nn.Sequential(conv, bn)`, keys `.0` and `.1`. In deploy form `bn` is `None`
/// and the conv carries the folded bias.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
}

impl ConvBn {
    pub(crate) fn new(
        device: &Device,
        io: [usize; 2],
        k: usize,
        stride: usize,
        groups: usize,
        momentum: f64,
    ) -> Self {
        ConvBn {
            conv: conv2d(device, io, k, stride, groups, false),
            bn: Some(bn(device, io[1], momentum)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = ops::conv(&self.conv, x);
        match &self.bn {
            Some(bn) => ops::batch_norm(bn, x),
            None => x,
        }
    }

    pub fn reparameterize(self) -> Self {
        ConvBn {
            conv: fold_conv_bn(self.conv, self.bn),
            bn: None,
        }
    }
}

/// timm/official `ConvBnAct` (keys `conv`, `bn1`), ReLU activation.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    pub bn1: Option<BatchNorm>,
}

impl ConvBnAct {
    pub(crate) fn new(device: &Device, io: [usize; 2], k: usize, momentum: f64) -> Self {
        ConvBnAct {
            conv: conv2d(device, io, k, 1, 1, false),
            bn1: Some(bn(device, io[1], momentum)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = ops::conv(&self.conv, x);
        let x = match &self.bn1 {
            Some(bn) => ops::batch_norm(bn, x),
            None => x,
        };
        relu(x)
    }

    pub fn reparameterize(self) -> Self {
        ConvBnAct {
            conv: fold_conv_bn(self.conv, self.bn1),
            bn1: None,
        }
    }
}

/// Squeeze-excite of the reference (`SqueezeExcite`): global mean, 1×1 reduce with bias,
/// ReLU, 1×1 expand with bias, hard-sigmoid gate `relu6(x + 3) / 6`.
/// Reduced channels are `make_divisible(channels * ratio, 4)`.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub conv_reduce: Conv2d,
    pub conv_expand: Conv2d,
}

impl SqueezeExcite {
    pub(crate) fn new(device: &Device, channels: usize, ratio: f64) -> Self {
        let reduced = make_divisible(channels as f64 * ratio, 4);
        SqueezeExcite {
            conv_reduce: conv2d(device, [channels, reduced], 1, 1, 1, true),
            conv_expand: conv2d(device, [reduced, channels], 1, 1, 1, true),
        }
    }

    /// `[N, C, H, W]` → same shape, each channel scaled by its gate.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = x.clone().mean_dim(3).mean_dim(2);
        let s = relu(ops::conv(&self.conv_reduce, s));
        let s = hard_sigmoid(ops::conv(&self.conv_expand, s), 1.0 / 6.0, 0.5);
        x * s
    }
}

/// `nn.Linear` with PyTorch's `[out, in]` weight layout, so checkpoints map as they are.
#[derive(Module, Debug)]
pub struct Classifier {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Classifier {
    pub(crate) fn new(device: &Device, d_in: usize, d_out: usize) -> Self {
        // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        let init = Initializer::Uniform {
            min: -1.0 / (d_in as f64).sqrt(),
            max: 1.0 / (d_in as f64).sqrt(),
        };
        Classifier {
            weight: init.init([d_out, d_in], device),
            bias: init.init([d_out], device),
        }
    }

    /// `[N, in]` → `[N, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze::<2>()
    }
}
