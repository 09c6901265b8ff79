//! The stage tables and the configuration that covers the whole family.
//!
//! Mirrors `cfgs` in the official `model/repghost.py` and timm's `_create_repghostnet` /
//! `_create_ghostnet`: one row per bottleneck, `# k, t, c, SE, s`, and every width derived
//! from the table by `make_divisible(c * width, 4)` (divisor 4, not 8).

use serde::{Deserialize, Serialize};

/// One bottleneck of a stage table: `k, t, c, SE, s` of the reference code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageRow {
    /// Depthwise kernel size of the strided conv and of the shortcut.
    pub kernel: usize,
    /// Expansion (hidden) channels at width 1.0.
    pub exp: usize,
    /// Output channels at width 1.0.
    pub out: usize,
    /// Squeeze-excite ratio; 0 disables SE.
    pub se: f64,
    pub stride: usize,
}

const fn row(kernel: usize, exp: usize, out: usize, se: f64, stride: usize) -> StageRow {
    StageRow {
        kernel,
        exp,
        out,
        se,
        stride,
    }
}

/// A single row, for tests that build one bottleneck.
pub const fn row_for_tests(kernel: usize, se: f64, stride: usize) -> StageRow {
    row(kernel, 0, 0, se, stride)
}

/// RepGhostNet stages (paper Table 9 / official `repghostnet()`): the GhostNet table with
/// the expansion halved, because the RepGhost module keeps all of its primary channels.
pub const REPGHOST_STAGES: [&[StageRow]; 9] = [
    &[row(3, 8, 16, 0.0, 1)],
    &[row(3, 24, 24, 0.0, 2)],
    &[row(3, 36, 24, 0.0, 1)],
    &[row(5, 36, 40, 0.25, 2)],
    &[row(5, 60, 40, 0.25, 1)],
    &[row(3, 120, 80, 0.0, 2)],
    &[
        row(3, 100, 80, 0.0, 1),
        row(3, 120, 80, 0.0, 1),
        row(3, 120, 80, 0.0, 1),
        row(3, 240, 112, 0.25, 1),
        row(3, 336, 112, 0.25, 1),
    ],
    &[row(5, 336, 160, 0.25, 2)],
    &[
        row(5, 480, 160, 0.0, 1),
        row(5, 480, 160, 0.25, 1),
        row(5, 480, 160, 0.0, 1),
        row(5, 480, 160, 0.25, 1),
    ],
];

/// GhostNet v1 stages (timm `_create_ghostnet`), the paper's concat-based baseline.
pub const GHOSTNET_STAGES: [&[StageRow]; 9] = [
    &[row(3, 16, 16, 0.0, 1)],
    &[row(3, 48, 24, 0.0, 2)],
    &[row(3, 72, 24, 0.0, 1)],
    &[row(5, 72, 40, 0.25, 2)],
    &[row(5, 120, 40, 0.25, 1)],
    &[row(3, 240, 80, 0.0, 2)],
    &[
        row(3, 200, 80, 0.0, 1),
        row(3, 184, 80, 0.0, 1),
        row(3, 184, 80, 0.0, 1),
        row(3, 480, 112, 0.25, 1),
        row(3, 672, 112, 0.25, 1),
    ],
    &[row(5, 672, 160, 0.25, 2)],
    &[
        row(5, 960, 160, 0.0, 1),
        row(5, 960, 160, 0.25, 1),
        row(5, 960, 160, 0.0, 1),
        row(5, 960, 160, 0.25, 1),
    ],
];

/// Channels of `conv_head`'s output, fixed across the family.
pub const HEAD_CHANNELS: usize = 1280;

/// `_make_divisible` of the reference code: round to the nearest multiple of `divisor`,
/// never below `divisor` and never more than 10% below `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    // Python's int() truncates toward zero; v is positive here.
    let mut new_v = (((v + d / 2.0) as i64 / divisor as i64) * divisor as i64).max(divisor as i64);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor as i64;
    }
    new_v as usize
}

/// Which ghost module the network is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// RepGhost module: add-based feature reuse, re-parameterizable (this paper).
    RepGhost,
    /// GhostNet v1 module: concat-based feature reuse (Han et al. 2020).
    Ghost,
}

/// Activation of the ghost modules (the paper uses ReLU; the rest of the ReLU family is
/// offered for experiments). Stem, SE and head always use ReLU, as in the reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Relu6,
    /// LeakyReLU with PyTorch's default slope 0.01.
    LeakyRelu,
    HardSwish,
}

/// Everything needed to build one member of the family. Fields missing from a stored
/// configuration take the defaults of [`NetConfig::new`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    pub arch: Arch,
    /// Channel multiplier applied to every row of the stage table.
    pub width: f64,
    #[serde(default = "defaults::num_classes")]
    pub num_classes: usize,
    #[serde(default = "defaults::in_chans")]
    pub in_chans: usize,
    /// Dropout before the classifier (official default 0.2).
    #[serde(default = "defaults::dropout")]
    pub dropout: f64,
    /// Identity shortcut where shapes match (`shortcut=False` is the paper's "wo" ablation).
    #[serde(default = "defaults::yes")]
    pub shortcut: bool,
    /// BN-only fusion branch in each RepGhost module (official `reparam_bn`).
    #[serde(default = "defaults::yes")]
    pub reparam_bn: bool,
    /// Plain identity fusion branch (official `reparam_identity`).
    #[serde(default)]
    pub reparam_identity: bool,
    #[serde(default)]
    pub act: Activation,
    /// BatchNorm running-statistics momentum (PyTorch convention, 0.1).
    #[serde(default = "defaults::bn_momentum")]
    pub bn_momentum: f64,
    /// Stride of the stem conv; 2 in the paper, 1 is useful for small (e.g. 32×32) images.
    #[serde(default = "defaults::stem_stride")]
    pub stem_stride: usize,
}

mod defaults {
    pub fn num_classes() -> usize {
        1000
    }
    pub fn in_chans() -> usize {
        3
    }
    pub fn dropout() -> f64 {
        0.2
    }
    pub fn yes() -> bool {
        true
    }
    pub fn bn_momentum() -> f64 {
        0.1
    }
    pub fn stem_stride() -> usize {
        2
    }
}

macro_rules! with {
    ($($(#[$m:meta])* $name:ident: $field:ident: $ty:ty),* $(,)?) => {
        impl NetConfig {
            $(
                $(#[$m])*
                pub fn $name(mut self, v: $ty) -> Self {
                    self.$field = v;
                    self
                }
            )*
        }
    };
}

with! {
    with_num_classes: num_classes: usize,
    with_in_chans: in_chans: usize,
    with_dropout: dropout: f64,
    with_shortcut: shortcut: bool,
    with_reparam_bn: reparam_bn: bool,
    with_reparam_identity: reparam_identity: bool,
    with_act: act: Activation,
    with_bn_momentum: bn_momentum: f64,
    with_stem_stride: stem_stride: usize,
}

impl NetConfig {
    /// `arch` at `width`, every other setting at its default (the paper's ImageNet model).
    pub fn new(arch: Arch, width: f64) -> Self {
        NetConfig {
            arch,
            width,
            num_classes: defaults::num_classes(),
            in_chans: defaults::in_chans(),
            dropout: defaults::dropout(),
            shortcut: true,
            reparam_bn: true,
            reparam_identity: false,
            act: Activation::Relu,
            bn_momentum: defaults::bn_momentum(),
            stem_stride: defaults::stem_stride(),
        }
    }

    pub fn stages(&self) -> &'static [&'static [StageRow]; 9] {
        match self.arch {
            Arch::RepGhost => &REPGHOST_STAGES,
            Arch::Ghost => &GHOSTNET_STAGES,
        }
    }

    pub fn stem_channels(&self) -> usize {
        make_divisible(16.0 * self.width, 4)
    }

    /// Channels of the 1×1 ConvBnAct after the last stage: RepGhostNet doubles the last
    /// expansion (`exp_size * width * 2`), GhostNet does not.
    pub fn final_channels(&self) -> usize {
        let last = self.stages()[8].last().expect("stage tables are non-empty");
        match self.arch {
            Arch::RepGhost => make_divisible(last.exp as f64 * self.width * 2.0, 4),
            Arch::Ghost => make_divisible(last.exp as f64 * self.width, 4),
        }
    }

    /// Per stage, per block: (in, mid, out) channels after applying the width.
    pub fn block_channels(&self) -> Vec<Vec<(usize, usize, usize)>> {
        let mut prev = self.stem_channels();
        self.stages()
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|r| {
                        let out = make_divisible(r.out as f64 * self.width, 4);
                        let mid = make_divisible(r.exp as f64 * self.width, 4);
                        let io = (prev, mid, out);
                        prev = out;
                        io
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_reference_rounding() {
        // Values checked by hand against the Python expression.
        assert_eq!(make_divisible(8.0, 4), 8);
        assert_eq!(make_divisible(9.28, 4), 12); // 16 * 0.58: 8 is more than 10% below
        assert_eq!(make_divisible(1.0, 4), 4);
        assert_eq!(make_divisible(10.0, 4), 12); // int(12)//4*4 = 12
        assert_eq!(make_divisible(17.76, 4), 16); // 16 * 1.11
        assert_eq!(make_divisible(13.0, 8), 16);
        assert_eq!(make_divisible(11.0, 8), 16); // 8 < 0.9 * 11 → bumped
    }

    #[test]
    fn repghost_1x_channels_follow_the_table() {
        let cfg = NetConfig::new(Arch::RepGhost, 1.0);
        assert_eq!(cfg.stem_channels(), 16);
        assert_eq!(cfg.final_channels(), 960);
        let ch = cfg.block_channels();
        assert_eq!(ch[0][0], (16, 8, 16));
        assert_eq!(ch[8][3], (160, 480, 160));
        let g = NetConfig::new(Arch::Ghost, 1.0);
        assert_eq!(g.final_channels(), 960);
    }
}
