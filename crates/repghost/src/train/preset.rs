//! The two recipes a run starts from: the paper's ImageNet recipe and one for small grey
//! images such as Fashion-MNIST. [`TrainConfig::preset`] fills every setting; a caller then
//! changes what it wants (the CLI's flags do exactly that).

use repghost_data::augment::{Augment, Crop};
use repghost_data::dataset::Dataset;
use repghost_data::transform::{IMAGENET_MEAN, IMAGENET_STD};
use repghost_data::{Image, Interpolation, Preprocess};

use super::config::{scaled_lr, TrainConfig};
use crate::config::NetConfig;
use crate::error::{Error, Result};

/// Fashion-MNIST's training-set mean and std, the small preset's normalization of grey input.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
pub const FASHION_MNIST_STD: f32 = 0.3530;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The official recipe: RandomResizedCrop, flip, colour jitter, random erasing, 224²,
    /// 300 epochs, lr 0.6 per 1024 images, weight decay 1e-5, 5 warm-up epochs.
    Imagenet,
    /// Grey images of at most 64 px: native size, one input channel, stride-1 stem, ±2 px
    /// shifts, flip, random erasing, 30 epochs, lr 0.2 per 128 images, weight decay 5e-5.
    Small,
}

/// What a preset needs to know of the data: its first training image.
#[derive(Clone, Copy, Debug)]
pub struct DataShape {
    /// The longer side in pixels.
    pub side: usize,
    /// One channel, or three equal ones.
    pub grey: bool,
}

impl DataShape {
    pub fn of(img: &Image) -> Self {
        let grey = img.channels == 1 || img.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]);
        DataShape {
            side: img.width.max(img.height),
            grey,
        }
    }

    /// The shape of `ds`'s first sample.
    pub fn first_of(ds: &dyn Dataset) -> Result<Self> {
        let (img, _) = ds.load(0).map_err(|e| Error::Data {
            name: ds.name(0),
            msg: e.to_string(),
        })?;
        Ok(DataShape::of(&img))
    }
}

impl Preset {
    /// `Small` for grey images of at most 64 px, `Imagenet` otherwise.
    pub fn detect(shape: DataShape) -> Preset {
        if shape.side <= 64 && shape.grey {
            Preset::Small
        } else {
            Preset::Imagenet
        }
    }
}

impl TrainConfig {
    /// Every setting of a run of `model` (whose network is `net`) on `data` with `preset`, for
    /// a global batch of `batch_size`. With `Small`, a network built from scratch (`adapt`)
    /// gets the data's channel count and a stride-1 stem; `init` weights keep their own.
    pub fn preset(
        preset: Preset,
        model: &str,
        net: NetConfig,
        adapt: bool,
        data: &str,
        shape: DataShape,
        batch_size: usize,
    ) -> TrainConfig {
        let bs = batch_size.max(1);
        let (net, pre, crop, jitter, lr, wd, epochs, warmup) = match preset {
            Preset::Small => {
                let net = if adapt {
                    net.with_in_chans(if shape.grey { 1 } else { 3 })
                        .with_stem_stride(1)
                } else {
                    net
                };
                let (mean, std) = if net.in_chans == 1 {
                    (vec![FASHION_MNIST_MEAN], vec![FASHION_MNIST_STD])
                } else {
                    (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec())
                };
                let pre = Preprocess {
                    img_size: shape.side,
                    crop_pct: 1.0,
                    interpolation: Interpolation::Bilinear,
                    mean,
                    std,
                    channels: net.in_chans,
                };
                let lr = 0.2 * bs as f64 / 128.0;
                (net, pre, Crop::Shift { pad: 2 }, 0.0, lr, 5e-5, 30, 1.0)
            }
            Preset::Imagenet => {
                let pre = Preprocess {
                    channels: net.in_chans,
                    ..Preprocess::imagenet()
                };
                let crop = Crop::RandomResized {
                    scale: (0.08, 1.0),
                    ratio: (3.0 / 4.0, 4.0 / 3.0),
                };
                (net, pre, crop, 0.4, scaled_lr(bs), 1e-5, 300, 5.0)
            }
        };
        TrainConfig {
            model: model.to_string(),
            net: net.with_dropout(0.2),
            epochs,
            batch_size: bs,
            lr,
            warmup_epochs: warmup,
            warmup_lr: 1e-4,
            min_lr: 1e-5,
            momentum: 0.9,
            nesterov: true,
            weight_decay: wd,
            label_smoothing: 0.1,
            ema_decay: 0.9999,
            augment: Augment {
                // Training resizes bilinearly in both presets, as timm's training transform does.
                pre: Preprocess {
                    interpolation: Interpolation::Bilinear,
                    ..pre.clone()
                },
                crop,
                hflip: 0.5,
                color_jitter: jitter,
                erase_p: 0.2,
            },
            eval: pre,
            seed: 0,
            limit: None,
            val_limit: None,
            init: None,
            data: data.to_string(),
            workers: 1,
        }
    }

    /// Sets the input side of training and evaluation.
    pub fn with_img_size(mut self, side: usize) -> Self {
        self.augment.pre.img_size = side;
        self.eval.img_size = side;
        self
    }
}
