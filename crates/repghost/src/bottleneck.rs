//! The bottleneck shared by RepGhostNet and GhostNet (reference `RepGhostBottleneck`,
//! timm `GhostBottleneck`): ghost1 (activated) → strided depthwise conv + BN when
//! stride > 1 → optional SE → ghost2 (linear) → plus shortcut.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};

use crate::config::{NetConfig, StageRow};
use crate::ghost_module::GhostLayer;
use crate::layers::{bn, conv2d, SqueezeExcite};
use crate::ops;
use crate::reparam::fold_conv_bn;

/// Projection shortcut where shapes change: depthwise k×k (stride s) + BN + 1×1 + BN
/// (`shortcut.0` … `shortcut.3`).
#[derive(Module, Debug)]
pub struct Shortcut {
    pub conv_dw: Conv2d,
    pub bn_dw: Option<BatchNorm>,
    pub conv_pw: Conv2d,
    pub bn_pw: Option<BatchNorm>,
}

impl Shortcut {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = ops::conv(&self.conv_dw, x);
        let x = self.bn_dw.as_ref().map_or(x.clone(), |b| ops::batch_norm(b, x));
        let x = ops::conv(&self.conv_pw, x);
        self.bn_pw.as_ref().map_or(x.clone(), |b| ops::batch_norm(b, x))
    }
}

#[derive(Module, Debug)]
pub struct Bottleneck<G: GhostLayer> {
    pub ghost1: G,
    pub conv_dw: Option<Conv2d>,
    pub bn_dw: Option<BatchNorm>,
    pub se: Option<SqueezeExcite>,
    pub ghost2: G,
    /// `None` where input and output shapes match (identity shortcut).
    pub shortcut: Option<Shortcut>,
    /// Whether the identity shortcut is added (false in the "wo" ablation).
    #[module(skip)]
    pub identity: bool,
}

impl<G: GhostLayer> Bottleneck<G> {
    pub fn new(
        device: &Device,
        cfg: &NetConfig,
        row: &StageRow,
        (cin, mid, cout): (usize, usize, usize),
    ) -> Self {
        let (k, s) = (row.kernel, row.stride);
        let project = cin != cout || s != 1;
        let m = cfg.bn_momentum;
        Bottleneck {
            ghost1: G::build(device, cfg, cin, mid, true),
            conv_dw: (s > 1).then(|| conv2d(device, [mid, mid], k, s, mid, false)),
            bn_dw: (s > 1).then(|| bn(device, mid, m)),
            se: (row.se > 0.0).then(|| SqueezeExcite::new(device, mid, row.se)),
            ghost2: G::build(device, cfg, mid, cout, false),
            shortcut: project.then(|| Shortcut {
                conv_dw: conv2d(device, [cin, cin], k, s, cin, false),
                bn_dw: Some(bn(device, cin, m)),
                conv_pw: conv2d(device, [cin, cout], 1, 1, 1, false),
                bn_pw: Some(bn(device, cout, m)),
            }),
            identity: !project && cfg.shortcut,
        }
    }

    /// `[N, in, H, W]` → `[N, out, H/s, W/s]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let residual = x.clone();
        let mut y = self.ghost1.forward(x);
        if let Some(conv) = &self.conv_dw {
            y = ops::conv(conv, y);
            if let Some(bn) = &self.bn_dw {
                y = ops::batch_norm(bn, y);
            }
        }
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        y = self.ghost2.forward(y);
        match (&self.shortcut, self.identity) {
            (Some(sc), _) => y + sc.forward(residual),
            (None, true) => y + residual,
            (None, false) => y,
        }
    }

    pub fn reparameterize(self) -> Self {
        let conv_dw = self.conv_dw.map(|c| fold_conv_bn(c, self.bn_dw));
        Bottleneck {
            ghost1: self.ghost1.reparameterize(),
            conv_dw,
            bn_dw: None,
            se: self.se,
            ghost2: self.ghost2.reparameterize(),
            shortcut: self.shortcut.map(|s| Shortcut {
                conv_dw: fold_conv_bn(s.conv_dw, s.bn_dw),
                bn_dw: None,
                conv_pw: fold_conv_bn(s.conv_pw, s.bn_pw),
                bn_pw: None,
            }),
            identity: self.identity,
        }
    }

    pub fn fuse_branches(self) -> Self {
        Bottleneck {
            ghost1: self.ghost1.fuse_branches(),
            ghost2: self.ghost2.fuse_branches(),
            ..self
        }
    }
}
