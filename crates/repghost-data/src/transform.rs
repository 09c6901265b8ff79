//! The evaluation transform of the reference (timm `transforms_imagenet_eval` on a PIL image):
//! resize the shorter side to `floor(img_size / crop_pct)` (torchvision `Resize(int)`),
//! centre-crop `img_size` (torchvision `CenterCrop`), scale to [0, 1], normalize.

use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::resize::{resize, Interpolation};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How images are turned into model input; stored in the weights' metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Side of the square crop the model sees.
    pub img_size: usize,
    /// Fraction of the resized image kept by the centre crop.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    /// Per-channel mean and std (one value per model input channel).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Model input channels: 3 (RGB) or 1 (grey, Pillow `convert("L")`).
    pub channels: usize,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self::imagenet()
    }
}

impl Preprocess {
    /// timm's default for RepGhostNet: 224 crop, crop_pct 0.875, bicubic, ImageNet mean/std.
    pub fn imagenet() -> Self {
        Preprocess {
            img_size: 224,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            channels: 3,
        }
    }

    /// ImageNet's preprocessing for a model with `channels` inputs; a one-channel model gets
    /// timm's convention, the mean of the three means and of the three stds.
    pub fn imagenet_for(channels: usize) -> Self {
        let mut p = Preprocess::imagenet();
        if channels == 1 {
            p.mean = vec![0.449];
            p.std = vec![0.226];
            p.channels = 1;
        }
        p
    }

    /// timm: `math.floor(img_size / crop_pct)`.
    pub fn scale_size(&self) -> usize {
        (self.img_size as f64 / self.crop_pct).floor() as usize
    }

    pub fn check(&self) -> Result<(), String> {
        if self.img_size == 0 || !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!(
                "bad preprocessing: img_size {} crop_pct {}",
                self.img_size, self.crop_pct
            ));
        }
        if !(self.channels == 1 || self.channels == 3)
            || self.mean.len() != self.channels
            || self.std.len() != self.channels
        {
            return Err(format!(
                "bad preprocessing: {} channels with {} means and {} stds",
                self.channels,
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.std.iter().any(|&s| s.is_nan() || s == 0.0) {
            return Err("bad preprocessing: zero std".into());
        }
        Ok(())
    }

    /// The 8-bit crop the model sees, before scaling and normalization.
    pub fn crop(&self, img: &Image) -> Image {
        let img = if self.channels == 1 {
            img.to_grey()
        } else {
            img.to_rgb()
        };
        let s = self.scale_size();
        let (w, h) = (img.width, img.height);
        // torchvision: the shorter side becomes s, the longer int(s * long / short).
        let (nw, nh) = if w <= h {
            (s, ((s * h) as f64 / w as f64) as usize)
        } else {
            (((s * w) as f64 / h as f64) as usize, s)
        };
        let resized = resize(&img, nw.max(1), nh.max(1), self.interpolation);
        center_crop(&resized, self.img_size)
    }

    /// `[C, img_size, img_size]` floats: `(v / 255 − mean) / std`, as torchvision computes.
    pub fn normalize(&self, img: &Image) -> Vec<f32> {
        let c = img.channels;
        let plane = img.width * img.height;
        let mut out = vec![0f32; c * plane];
        for (i, px) in img.data.chunks_exact(c).enumerate() {
            for ch in 0..c {
                out[ch * plane + i] = (px[ch] as f32 / 255.0 - self.mean[ch]) / self.std[ch];
            }
        }
        out
    }

    pub fn apply(&self, img: &Image) -> Vec<f32> {
        self.normalize(&self.crop(img))
    }
}

/// torchvision `CenterCrop`: offsets `int(round((size - crop) / 2))` with Python's
/// round-half-to-even, zero padding where the crop is larger than the image.
pub fn center_crop(img: &Image, size: usize) -> Image {
    let c = img.channels;
    let off = |full: usize| ((full as f64 - size as f64) / 2.0).round_ties_even() as i64;
    let (top, left) = (off(img.height), off(img.width));
    let mut data = vec![0u8; size * size * c];
    for y in 0..size {
        let sy = y as i64 + top;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..size {
            let sx = x as i64 + left;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let src = (sy as usize * img.width + sx as usize) * c;
            data[(y * size + x) * c..(y * size + x + 1) * c].copy_from_slice(&img.data[src..src + c]);
        }
    }
    Image {
        width: size,
        height: size,
        channels: c,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_half_to_even() {
        // 261 - 256 = 5 → 2.5 → 2 (Python round), not 3.
        let img = Image {
            width: 261,
            height: 256,
            channels: 1,
            data: (0..261 * 256).map(|i| (i % 261) as u8).collect(),
        };
        let c = center_crop(&img, 256);
        assert_eq!(c.data[0], 2);
        let img = Image {
            width: 263,
            height: 256,
            channels: 1,
            data: (0..263 * 256).map(|i| (i % 263) as u8).collect(),
        };
        assert_eq!(center_crop(&img, 256).data[0], 4); // 3.5 → 4
    }

    #[test]
    fn imagenet_eval_sizes() {
        let p = Preprocess::imagenet();
        assert_eq!(p.scale_size(), 256);
        let img = Image {
            width: 500,
            height: 375,
            channels: 3,
            data: vec![9; 500 * 375 * 3],
        };
        let c = p.crop(&img);
        assert_eq!((c.width, c.height, c.channels), (224, 224, 3));
        let x = p.apply(&img);
        assert_eq!(x.len(), 3 * 224 * 224);
        assert!((x[0] - (9.0 / 255.0 - 0.485) / 0.229).abs() < 1e-6);
    }
}
