//! The network (reference `RepGhostNet`, timm `RepGhostNet` / `GhostNet`): stem 3×3 s2
//! conv + BN + ReLU, nine stages of bottlenecks, a 1×1 ConvBnAct, global pool, `conv_head`
//! 1×1 to 1280 with bias + ReLU, dropout, linear classifier.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::bottleneck::Bottleneck;
use crate::config::{NetConfig, HEAD_CHANNELS};
use crate::ghost_module::GhostLayer;
use crate::layers::{bn, conv2d, Classifier, ConvBnAct};
use crate::ops;

/// Index of the stage whose output is the stride-8, -16 and -32 feature map, as timm's
/// `feature_info` names them (`blocks.3`, `blocks.5`, `blocks.7`: the first stage at each
/// new stride; timm's `features_only` hooks those modules).
pub const FEATURE_STAGES: [usize; 3] = [3, 5, 7];

#[derive(Module, Debug)]
pub struct Net<G: GhostLayer> {
    pub conv_stem: Conv2d,
    pub bn1: Option<BatchNorm>,
    /// `blocks.{stage}.{block}` of the reference.
    pub blocks: Vec<Vec<Bottleneck<G>>>,
    /// The 1×1 ConvBnAct after the last stage (`blocks.9.0` in the reference).
    pub final_conv: ConvBnAct,
    pub conv_head: Conv2d,
    pub dropout: Dropout,
    pub classifier: Classifier,
    #[module(skip)]
    pub config: NetConfig,
}

impl<G: GhostLayer> Net<G> {
    pub fn new(cfg: &NetConfig, device: &Device) -> Self {
        let stem = cfg.stem_channels();
        let channels = cfg.block_channels();
        let blocks: Vec<Vec<Bottleneck<G>>> = cfg
            .stages()
            .iter()
            .zip(&channels)
            .map(|(rows, ios)| {
                rows.iter()
                    .zip(ios)
                    .map(|(row, &io)| Bottleneck::new(device, cfg, row, io))
                    .collect()
            })
            .collect();
        let last = channels[8].last().expect("non-empty").2;
        let fin = cfg.final_channels();
        Net {
            conv_stem: conv2d(device, [cfg.in_chans, stem], 3, cfg.stem_stride, 1, false),
            bn1: Some(bn(device, stem, cfg.bn_momentum)),
            blocks,
            final_conv: ConvBnAct::new(device, [last, fin], 1, cfg.bn_momentum),
            conv_head: conv2d(device, [fin, HEAD_CHANNELS], 1, 1, 1, true),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            classifier: Classifier::new(device, HEAD_CHANNELS, cfg.num_classes),
            config: cfg.clone(),
        }
    }

    fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let x = ops::conv(&self.conv_stem, x);
        let x = match &self.bn1 {
            Some(bn) => ops::batch_norm(bn, x),
            None => x,
        };
        relu(x)
    }

    /// `[N, in_chans, H, W]` → `[N, final_channels, H/32, W/32]` (timm `forward_features`).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem(x);
        for stage in &self.blocks {
            for block in stage {
                x = block.forward(x);
            }
        }
        self.final_conv.forward(x)
    }

    /// The stride-8, -16 and -32 feature maps for detection backbones (the paper's COCO
    /// experiments), matching timm's `features_only` outputs 2, 3 and 4.
    pub fn forward_pyramid(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stem(x);
        let mut out = Vec::new();
        for (i, stage) in self.blocks.iter().enumerate() {
            for block in stage {
                x = block.forward(x);
            }
            if FEATURE_STAGES.contains(&i) {
                out.push(x.clone());
            }
            if i == FEATURE_STAGES[2] {
                break;
            }
        }
        out
    }

    /// Channels and stride of each [`Net::forward_pyramid`] output.
    pub fn feature_info(&self) -> Vec<(usize, usize)> {
        let ch = self.config.block_channels();
        let stem_stride = self.config.stem_stride;
        FEATURE_STAGES
            .iter()
            .zip([4, 8, 16])
            .map(|(&s, f)| (ch[s].last().expect("non-empty").2, f * stem_stride))
            .collect()
    }

    /// `[N, C, h, w]` → logits `[N, classes]`, or the 1280-d pre-logits.
    pub fn forward_head(&self, x: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        let x = x.mean_dim(3).mean_dim(2);
        let x = relu(ops::conv(&self.conv_head, x));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.dropout.forward(x);
        if pre_logits {
            x
        } else {
            self.classifier.forward(x)
        }
    }

    /// Training forward with the dropout mask supplied by the caller (`keep`: `[N, 1280]`,
    /// 0 or 1/(1 − p)), so that the mask comes from the trainer's seeded generator and does not
    /// depend on which thread computes which samples.
    pub fn forward_train(&self, x: Tensor<4>, keep: Option<Tensor<2>>) -> Tensor<2> {
        let x = self.forward_features(x).mean_dim(3).mean_dim(2);
        let x: Tensor<2> = relu(ops::conv(&self.conv_head, x)).flatten(1, 3);
        let x = match keep {
            Some(k) => x * k,
            None => x,
        };
        self.classifier.forward(x)
    }

    /// `[N, in_chans, H, W]` → logits `[N, num_classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(x), false)
    }

    /// Replaces the classifier (timm `reset_classifier`), e.g. for fine-tuning.
    pub fn reset_classifier(mut self, num_classes: usize) -> Self {
        let device = self.classifier.weight.device();
        self.classifier = Classifier::new(&device, HEAD_CHANNELS, num_classes);
        self.config.num_classes = num_classes;
        self
    }

    /// Train form (eval statistics) → deploy form: every BatchNorm folded into its conv and
    /// every fusion branch into the cheap depthwise kernel. Outputs agree to rounding.
    pub fn reparameterize(self) -> Self {
        Net {
            conv_stem: crate::reparam::fold_conv_bn(self.conv_stem, self.bn1),
            bn1: None,
            blocks: self
                .blocks
                .into_iter()
                .map(|s| s.into_iter().map(Bottleneck::reparameterize).collect())
                .collect(),
            final_conv: self.final_conv.reparameterize(),
            ..self
        }
    }

    /// The official `convert.py` form: fusion branches folded into the cheap ops, every
    /// other BatchNorm kept.
    pub fn fuse_branches(self) -> Self {
        Net {
            blocks: self
                .blocks
                .into_iter()
                .map(|s| s.into_iter().map(Bottleneck::fuse_branches).collect())
                .collect(),
            ..self
        }
    }
}

pub type RepGhostNet = Net<crate::ghost_module::RepGhostModule>;
pub type GhostNet = Net<crate::ghostnet::GhostModule>;
