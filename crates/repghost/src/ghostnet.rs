//! GhostNet v1's ghost module (Han et al. 2020; timm `GhostModule`), the paper's baseline:
//! the cheap depthwise branch is *concatenated* onto the primary output, then sliced to
//! `out_chs`. It cannot be re-parameterized into a plain chain; only its BNs fold.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::{Activation, NetConfig};
use crate::ghost_module::GhostLayer;
use crate::layers::{activate, ConvBn};

#[derive(Module, Debug)]
pub struct GhostModule {
    /// 1×1 conv + BN to `ceil(out / 2)` channels.
    pub primary_conv: ConvBn,
    /// Depthwise 3×3 conv + BN on the primary output.
    pub cheap_operation: ConvBn,
    #[module(skip)]
    pub out_chs: usize,
    #[module(skip)]
    pub act: Option<Activation>,
}

impl GhostLayer for GhostModule {
    fn build(device: &Device, cfg: &NetConfig, in_chs: usize, out_chs: usize, relu: bool) -> Self {
        let init = out_chs.div_ceil(2);
        let m = cfg.bn_momentum;
        GhostModule {
            primary_conv: ConvBn::new(device, [in_chs, init], 1, 1, 1, m),
            cheap_operation: ConvBn::new(device, [init, init], 3, 1, init, m),
            out_chs,
            act: relu.then_some(cfg.act),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = |t| match self.act {
            Some(a) => activate(a, t),
            None => t,
        };
        let x1 = act(self.primary_conv.forward(x));
        let x2 = act(self.cheap_operation.forward(x1.clone()));
        let out = Tensor::cat(vec![x1, x2], 1);
        if out.dims()[1] == self.out_chs {
            out
        } else {
            out.narrow(1, 0, self.out_chs)
        }
    }

    fn reparameterize(self) -> Self {
        GhostModule {
            primary_conv: self.primary_conv.reparameterize(),
            cheap_operation: self.cheap_operation.reparameterize(),
            ..self
        }
    }
}
