//! The RepGhost module (paper §3.2, Fig. 3; reference class `RepGhostModule`).
//!
//! Train form: `x1 = act(BN(conv1x1(x)))`, `y = act(BN(dwconv3x3(x1)) + BN(x1) [+ x1])`.
//! Deploy form: `y = act(dwconv3x3'(act(conv1x1'(x))))`, every BN folded into a conv bias
//! and the fusion branches folded into the depthwise kernel's centre tap.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};

use crate::config::{Activation, NetConfig};
use crate::layers::{activate, bn, ConvBn};
use crate::ops;
use crate::reparam::{conv_with, fold_bn, host64, identity_dw_kernel, BnParams};

/// What a bottleneck needs from its ghost module; implemented by [`RepGhostModule`] and by
/// GhostNet's concat-based [`crate::ghostnet::GhostModule`].
pub trait GhostLayer: Module + Sized {
    /// A module from `in_chs` to `out_chs` channels; `relu` selects the activated variant.
    fn build(device: &Device, cfg: &NetConfig, in_chs: usize, out_chs: usize, relu: bool) -> Self;
    /// `[N, in, H, W]` → `[N, out, H, W]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4>;
    /// Consumes the train form, returns the deploy form (no BatchNorm, no fusion branch).
    fn reparameterize(self) -> Self;
    /// Folds only the fusion branches into the cheap op, as the official `switch_to_deploy`
    /// and `convert.py` do (other BatchNorms stay). Identity for modules without branches.
    fn fuse_branches(self) -> Self {
        self
    }
}

#[derive(Module, Debug)]
pub struct RepGhostModule {
    /// 1×1 conv + BN (`primary_conv.0`, `primary_conv.1`), activation applied in forward.
    pub primary_conv: ConvBn,
    /// The BN-only fusion branch on the primary output (`fusion_bn.0`).
    pub fusion_bn: Option<BatchNorm>,
    /// Depthwise 3×3 conv + BN (`cheap_operation.0`, `.1`).
    pub cheap_operation: ConvBn,
    /// The plain identity fusion branch (`reparam_identity`).
    #[module(skip)]
    pub fusion_identity: bool,
    /// `None` for the un-activated module (ghost2).
    #[module(skip)]
    pub act: Option<Activation>,
}

impl GhostLayer for RepGhostModule {
    fn build(device: &Device, cfg: &NetConfig, in_chs: usize, out_chs: usize, relu: bool) -> Self {
        let m = cfg.bn_momentum;
        RepGhostModule {
            primary_conv: ConvBn::new(device, [in_chs, out_chs], 1, 1, 1, m),
            fusion_bn: cfg.reparam_bn.then(|| bn(device, out_chs, m)),
            cheap_operation: ConvBn::new(device, [out_chs, out_chs], 3, 1, out_chs, m),
            fusion_identity: cfg.reparam_identity,
            act: relu.then_some(cfg.act),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x1 = self.primary_conv.forward(x);
        if let Some(act) = self.act {
            x1 = activate(act, x1);
        }
        let mut x2 = self.cheap_operation.forward(x1.clone());
        if let Some(bn) = &self.fusion_bn {
            x2 = x2 + ops::batch_norm(bn, x1.clone());
        }
        if self.fusion_identity {
            x2 = x2 + x1;
        }
        match self.act {
            Some(act) => activate(act, x2),
            None => x2,
        }
    }

    fn reparameterize(self) -> Self {
        let m = self.fuse_branches();
        RepGhostModule {
            primary_conv: m.primary_conv.reparameterize(),
            ..m
        }
    }

    fn fuse_branches(self) -> Self {
        let cheap = self.cheap_operation;
        let [ch, _, k, _] = cheap.conv.weight.dims();
        let w = host64(&cheap.conv.weight.val());
        let b = cheap.conv.bias.as_ref().map(|b| host64(&b.val()));
        let (mut w, mut b) = match &cheap.bn {
            Some(bn) => fold_bn(&w, ch, b.as_deref(), &BnParams::from_module(bn)),
            None => (w, b.unwrap_or_else(|| vec![0.0; ch])),
        };
        let id = identity_dw_kernel(ch, k);
        if let Some(fbn) = &self.fusion_bn {
            let (iw, ib) = fold_bn(&id, ch, None, &BnParams::from_module(fbn));
            w.iter_mut().zip(iw).for_each(|(a, v)| *a += v);
            b.iter_mut().zip(ib).for_each(|(a, v)| *a += v);
        }
        if self.fusion_identity {
            w.iter_mut().zip(&id).for_each(|(a, &v)| *a += v);
        }
        let conv = conv_with(&cheap.conv, w, b);
        RepGhostModule {
            primary_conv: self.primary_conv,
            fusion_bn: None,
            cheap_operation: ConvBn { conv, bn: None },
            fusion_identity: false,
            act: self.act,
        }
    }
}
