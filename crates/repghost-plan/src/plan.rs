//! The plan: every layer of one network, derived from its [`NetConfig`] alone, with channels,
//! kernel sizes, strides, activations, state-dict key names and the feature taps. The burn
//! modules build the same structure from the same config; everything else that needs the
//! structure (counting, variant detection, the runtime's loader) reads it here.
//!
//! Keys are the reference's (official `RepGhostNet`, timm): `nn.Sequential` indices and all.
//! [`Plan::tensors`] lists them for each [`Form`].

use serde::{Deserialize, Serialize};

use crate::config::{make_divisible, Activation, Arch, NetConfig, HEAD_CHANNELS};
use crate::names::*;

/// Stages whose outputs are the stride-8, -16 and -32 maps (timm's `feature_info`, at the
/// paper's stem stride of 2).
pub const FEATURE_STAGES: [usize; 3] = [3, 5, 7];

/// Index of the reference's final 1×1 ConvBnAct, kept as the only block of a tenth stage.
pub const FINAL_STAGE: usize = 9;

/// Every BatchNorm's epsilon (PyTorch's and burn's default, which the reference keeps).
pub const BN_EPSILON: f64 = 1e-5;

/// Which structure a set of weights has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Every BatchNorm and fusion branch present: trainable.
    Train,
    /// The official `convert.py` output: fusion branches folded into the cheap ops, every
    /// other BatchNorm kept.
    Fused,
    /// Every BatchNorm folded (ours): convs with bias, SE, adds, activations, classifier.
    Deploy,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Train => "train",
            Form::Fused => "fused",
            Form::Deploy => "deploy",
        }
    }
}

/// What follows a conv's bias in the deploy form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    /// The ghost modules' activation, [`NetConfig::act`].
    Module(Activation),
}

/// One convolution. In the deploy form it is `{key}.weight` `[cout, cin / groups, k, k]` and
/// `{key}.bias` `[cout]`; in the train form it is `{train.0}.weight` followed by the
/// BatchNorm `{train.1}.*`, unless `train` is `None` (a conv with its own bias in every form).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub key: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
    pub act: Act,
    /// Train-form keys of the conv and of its BatchNorm.
    pub train: Option<(String, String)>,
}

impl Conv {
    /// `[cout, cin / groups, k, k]`
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.k, self.k]
    }

    /// Output size for an `h × w` input (padding `k / 2`).
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        (
            (h + 2 * p - self.k) / self.stride + 1,
            (w + 2 * p - self.k) / self.stride + 1,
        )
    }
}

/// A ghost module: the `primary` 1×1 conv and the `cheap` depthwise 3×3 conv on its output,
/// joined by addition (RepGhost, the fusion branches folded into `cheap`) or by concatenation
/// sliced to `out` channels (GhostNet).
#[derive(Clone, Debug, PartialEq)]
pub struct Ghost {
    pub key: String,
    pub primary: Conv,
    pub cheap: Conv,
    /// Output channels; for RepGhost those of `cheap`.
    pub out: usize,
    pub concat: bool,
    /// RepGhost's BN-only fusion branch (train form): `{key}.0.*`.
    pub fusion_bn: Option<String>,
    /// RepGhost's plain identity fusion branch (train form; an ablation).
    pub fusion_identity: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Shortcut {
    /// The "wo" ablation: no identity path where shapes match.
    None,
    Identity,
    /// Depthwise `k × k` of stride `s`, then 1×1 (`shortcut.0` … `shortcut.3`).
    Projection {
        dw: Box<Conv>,
        pw: Box<Conv>,
    },
}

/// Squeeze-excite: channel means, `reduce` 1×1 + ReLU, `expand` 1×1, hard sigmoid, scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Se {
    pub reduce: Conv,
    pub expand: Conv,
}

/// One bottleneck (reference `RepGhostBottleneck`, timm `GhostBottleneck`).
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// `blocks.{stage}.{index}`
    pub key: String,
    pub stage: usize,
    pub cin: usize,
    pub mid: usize,
    pub cout: usize,
    pub stride: usize,
    pub ghost1: Ghost,
    /// The strided depthwise conv between the ghost modules (stride 2 only).
    pub conv_dw: Option<Conv>,
    pub se: Option<Se>,
    pub ghost2: Ghost,
    pub shortcut: Shortcut,
}

/// A feature map a detection neck reads: the output of `block`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    pub block: usize,
    pub channels: usize,
    /// Input pixels per output pixel.
    pub stride: usize,
}

/// One tensor of a state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub key: String,
    pub shape: Vec<usize>,
}

/// The whole network.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub config: NetConfig,
    pub stem: Conv,
    pub blocks: Vec<Block>,
    /// Index of each stage's last block.
    pub stage_ends: Vec<usize>,
    pub final_conv: Conv,
    pub conv_head: Conv,
    /// The linear classifier, as a 1×1 conv on the pooled features.
    pub classifier: Conv,
    pub taps: [Tap; 3],
}

fn conv(key: &str, [cin, cout]: [usize; 2], k: usize, stride: usize, groups: usize, act: Act) -> Conv {
    Conv {
        key: key.to_string(),
        cin,
        cout,
        k,
        stride,
        groups,
        act,
        train: None,
    }
}

/// A conv followed by a BatchNorm in the train form: `{seq}.0` and `{seq}.1` of an
/// `nn.Sequential`, or two named keys.
fn conv_bn(
    deploy: &str,
    train: (&str, &str),
    io: [usize; 2],
    k: usize,
    stride: usize,
    groups: usize,
    act: Act,
) -> Conv {
    Conv {
        train: Some((train.0.to_string(), train.1.to_string())),
        ..conv(deploy, io, k, stride, groups, act)
    }
}

fn ghost(cfg: &NetConfig, key: &str, cin: usize, out: usize, relu: bool) -> Ghost {
    let act = if relu { Act::Module(cfg.act) } else { Act::None };
    let (primary, concat) = match cfg.arch {
        Arch::RepGhost => (out, false),
        Arch::Ghost => (out.div_ceil(2), true),
    };
    let p = format!("{key}.{PRIMARY}");
    let c = format!("{key}.{CHEAP}");
    Ghost {
        key: key.to_string(),
        primary: conv_bn(
            &format!("{p}.0"),
            (&format!("{p}.0"), &format!("{p}.1")),
            [cin, primary],
            1,
            1,
            1,
            act,
        ),
        cheap: conv_bn(
            &c,
            (&format!("{c}.0"), &format!("{c}.1")),
            [primary, primary],
            3,
            1,
            primary,
            act,
        ),
        out,
        concat,
        fusion_bn: (cfg.arch == Arch::RepGhost && cfg.reparam_bn).then(|| format!("{key}.{FUSION_BN}")),
        fusion_identity: cfg.arch == Arch::RepGhost && cfg.reparam_identity,
    }
}

impl Plan {
    pub fn new(cfg: &NetConfig) -> Plan {
        let stem_ch = cfg.stem_channels();
        let stem = conv_bn(
            STEM,
            (STEM, STEM_BN),
            [cfg.in_chans, stem_ch],
            3,
            cfg.stem_stride,
            1,
            Act::Relu,
        );
        let mut blocks = Vec::new();
        let mut stage_ends = Vec::new();
        for (s, (rows, ios)) in cfg.stages().iter().zip(cfg.block_channels()).enumerate() {
            for (j, (row, (cin, mid, cout))) in rows.iter().zip(ios).enumerate() {
                let key = format!("{BLOCKS}.{s}.{j}");
                let (k, st) = (row.kernel, row.stride);
                let project = cin != cout || st != 1;
                let ghost1 = ghost(cfg, &format!("{key}.{GHOST1}"), cin, mid, true);
                let ghost2 = ghost(cfg, &format!("{key}.{GHOST2}"), mid, cout, false);
                let conv_dw = (st > 1).then(|| {
                    let c = format!("{key}.{CONV_DW}");
                    conv_bn(
                        &c,
                        (&c, &format!("{key}.{BN_DW}")),
                        [mid, mid],
                        k,
                        st,
                        mid,
                        Act::None,
                    )
                });
                let se = (row.se > 0.0).then(|| {
                    let r = make_divisible(mid as f64 * row.se, 4);
                    Se {
                        reduce: conv(&format!("{key}.{SE}.{SE_REDUCE}"), [mid, r], 1, 1, 1, Act::Relu),
                        expand: conv(&format!("{key}.{SE}.{SE_EXPAND}"), [r, mid], 1, 1, 1, Act::None),
                    }
                });
                let sc = format!("{key}.{SHORTCUT}");
                let shortcut = if project {
                    Shortcut::Projection {
                        dw: Box::new(conv_bn(
                            &format!("{sc}.0"),
                            (&format!("{sc}.0"), &format!("{sc}.1")),
                            [cin, cin],
                            k,
                            st,
                            cin,
                            Act::None,
                        )),
                        pw: Box::new(conv_bn(
                            &format!("{sc}.2"),
                            (&format!("{sc}.2"), &format!("{sc}.3")),
                            [cin, cout],
                            1,
                            1,
                            1,
                            Act::None,
                        )),
                    }
                } else if cfg.shortcut {
                    Shortcut::Identity
                } else {
                    Shortcut::None
                };
                blocks.push(Block {
                    key,
                    stage: s,
                    cin,
                    mid,
                    cout,
                    stride: st,
                    ghost1,
                    conv_dw,
                    se,
                    ghost2,
                    shortcut,
                });
            }
            stage_ends.push(blocks.len() - 1);
        }
        let last = blocks.last().expect("stage tables are non-empty").cout;
        let fin = cfg.final_channels();
        let f = format!("{BLOCKS}.{FINAL_STAGE}.0");
        let final_conv = conv_bn(
            &format!("{f}.{FINAL_CONV}"),
            (&format!("{f}.{FINAL_CONV}"), &format!("{f}.{FINAL_BN}")),
            [last, fin],
            1,
            1,
            1,
            Act::Relu,
        );
        let mut stride = cfg.stem_stride;
        let mut taps = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            stride *= b.stride;
            if FEATURE_STAGES.iter().any(|&s| stage_ends[s] == i) {
                taps.push(Tap {
                    block: i,
                    channels: b.cout,
                    stride,
                });
            }
        }
        Plan {
            config: cfg.clone(),
            stem,
            taps: taps.try_into().expect("three feature stages"),
            blocks,
            stage_ends,
            final_conv,
            conv_head: conv(CONV_HEAD, [fin, HEAD_CHANNELS], 1, 1, 1, Act::Relu),
            classifier: conv(CLASSIFIER, [HEAD_CHANNELS, cfg.num_classes], 1, 1, 1, Act::None),
        }
    }

    /// Every tensor of the state dict of `form`, in layer order, with its shape: the keys
    /// and shapes the official code, timm and `repghost` read and write. (GhostNet has no
    /// fusion branches: its fused form is its train form.)
    pub fn tensors(&self, form: Form) -> Vec<TensorSpec> {
        let mut sd = StateDict {
            form,
            out: Vec::new(),
        };
        let deploy = form == Form::Deploy;
        sd.conv(&self.stem, deploy);
        for b in &self.blocks {
            sd.ghost(&b.ghost1);
            if let Some(c) = &b.conv_dw {
                sd.conv(c, deploy);
            }
            if let Some(se) = &b.se {
                sd.conv(&se.reduce, true);
                sd.conv(&se.expand, true);
            }
            sd.ghost(&b.ghost2);
            if let Shortcut::Projection { dw, pw } = &b.shortcut {
                sd.conv(dw, deploy);
                sd.conv(pw, deploy);
            }
        }
        sd.conv(&self.final_conv, deploy);
        sd.conv(&self.conv_head, true);
        let c = &self.classifier;
        sd.put(&format!("{}.weight", c.key), vec![c.cout, c.cin]);
        sd.put(&format!("{}.bias", c.key), vec![c.cout]);
        sd.out
    }
}

/// The state dict of one form, as [`Plan::tensors`] lists it.
struct StateDict {
    form: Form,
    out: Vec<TensorSpec>,
}

impl StateDict {
    fn put(&mut self, key: &str, shape: Vec<usize>) {
        self.out.push(TensorSpec {
            key: key.to_string(),
            shape,
        });
    }

    fn bn(&mut self, key: &str, c: usize) {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            self.put(&format!("{key}.{p}"), vec![c]);
        }
    }

    /// A conv, its BatchNorm folded into a bias (`folded`) or kept.
    fn conv(&mut self, c: &Conv, folded: bool) {
        match (&c.train, folded) {
            (Some((w, b)), false) => {
                self.put(&format!("{w}.weight"), c.weight_shape().to_vec());
                self.bn(b, c.cout);
            }
            _ => {
                self.put(&format!("{}.weight", c.key), c.weight_shape().to_vec());
                self.put(&format!("{}.bias", c.key), vec![c.cout]);
            }
        }
    }

    fn ghost(&mut self, g: &Ghost) {
        let deploy = self.form == Form::Deploy;
        self.conv(&g.primary, deploy);
        // The official `convert.py` folds the fusion branches into a bare cheap conv.
        self.conv(&g.cheap, deploy || (!g.concat && self.form == Form::Fused));
        if let (Some(f), Form::Train) = (&g.fusion_bn, self.form) {
            self.bn(&format!("{f}.0"), g.primary.cout);
        }
    }
}

/// Parameters and multiply-accumulates of conv and linear layers (the paper's Table 2
/// convention: bias adds are not MACs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub params: u64,
    pub macs: u64,
}

impl Counts {
    /// Adds `conv` in its deploy form (with bias) on an `(h, w)` map; its output size.
    fn conv(&mut self, conv: &Conv, (h, w): (usize, usize)) -> (usize, usize) {
        let (oh, ow) = conv.out_hw(h, w);
        let weights = conv.weight_shape().iter().product::<usize>() as u64;
        self.params += weights + conv.cout as u64;
        self.macs += weights * (oh * ow) as u64;
        (oh, ow)
    }
}

impl Plan {
    /// Counts of the deploy form (every BatchNorm folded into a bias) on an `h × w` input.
    pub fn deploy_counts(&self, [h, w]: [usize; 2]) -> Counts {
        let mut c = Counts::default();
        let mut x = c.conv(&self.stem, (h, w));
        for b in &self.blocks {
            let mut y = c.conv(&b.ghost1.primary, x);
            y = c.conv(&b.ghost1.cheap, y);
            if let Some(dw) = &b.conv_dw {
                y = c.conv(dw, y);
            }
            if let Some(se) = &b.se {
                c.conv(&se.reduce, (1, 1));
                c.conv(&se.expand, (1, 1));
            }
            y = c.conv(&b.ghost2.primary, y);
            y = c.conv(&b.ghost2.cheap, y);
            if let Shortcut::Projection { dw, pw } = &b.shortcut {
                let s = c.conv(dw, x);
                c.conv(pw, s);
            }
            x = y;
        }
        c.conv(&self.final_conv, x);
        c.conv(&self.conv_head, (1, 1));
        c.conv(&self.classifier, (1, 1));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deploy-form parameters and MACs at 224² against the exact reference counts of the
    /// official models with 1000 classes (docs/reference.md; the paper's Table 2 rounds them).
    #[test]
    fn counts_match_the_reference_table() {
        for (width, params, macs) in [
            (0.5, 2_302_956u64, 43.31),
            (1.0, 4_051_648, 142.39),
            (2.0, 9_752_212, 515.87),
        ] {
            let c = Plan::new(&NetConfig::new(Arch::RepGhost, width)).deploy_counts([224, 224]);
            assert_eq!(c.params, params, "{width}x params");
            let m = c.macs as f64 / 1e6;
            assert!((m - macs).abs() < 0.005, "{width}x: {m:.3} M MACs, table {macs}");
        }
    }

    #[test]
    fn the_1x_plan_has_the_papers_structure() {
        let p = Plan::new(&NetConfig::new(Arch::RepGhost, 1.0));
        assert_eq!(p.blocks.len(), 16);
        assert_eq!(p.stage_ends, [0, 1, 2, 3, 4, 5, 10, 11, 15]);
        let strided: Vec<usize> = (0..16).filter(|&i| p.blocks[i].stride == 2).collect();
        assert_eq!(strided, [1, 3, 5, 11]);
        assert!(strided.iter().all(|&i| p.blocks[i].conv_dw.is_some()));
        let taps: Vec<(usize, usize, usize)> =
            p.taps.iter().map(|t| (t.block, t.channels, t.stride)).collect();
        assert_eq!(taps, [(3, 40, 8), (5, 80, 16), (11, 160, 32)]);
        assert_eq!(p.blocks[0].key, "blocks.0.0");
        assert!(matches!(p.blocks[0].shortcut, Shortcut::Identity));
        let wo = Plan::new(&NetConfig::new(Arch::RepGhost, 1.0).with_shortcut(false));
        assert!(matches!(wo.blocks[0].shortcut, Shortcut::None));
        // GhostNet keeps half of each module's output in its primary conv.
        let g = Plan::new(&NetConfig::new(Arch::Ghost, 1.0));
        assert_eq!((g.blocks[0].ghost1.primary.cout, g.blocks[0].ghost1.out), (8, 16));
        assert!(g.blocks[0].ghost1.concat && g.blocks[0].ghost1.fusion_bn.is_none());
    }
}
