//! Training-time augmentation, after timm's `transforms_imagenet_train` as the official
//! `train.sh` configures it: RandomResizedCrop(scale, ratio), horizontal flip, colour jitter,
//! normalization, random erasing in pixel mode. Small images (Fashion-MNIST) use a shift
//! instead of the resized crop, since a crop of 8% of a 28×28 picture leaves nothing to learn.
//!
//! Everything random is drawn from the [`Rng`] the caller passes, so a sample's augmentation
//! depends only on the key it was seeded with (seed, epoch, index), not on thread scheduling.

use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::resize::resize;
use crate::rng::Rng;
use crate::transform::Preprocess;

/// How the training crop is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// torchvision/timm `RandomResizedCrop`: a region of `scale` of the area and `ratio` of
    /// aspect, resized to the model's input size.
    RandomResized { scale: (f64, f64), ratio: (f64, f64) },
    /// The evaluation crop translated by up to `pad` pixels each way, zero filled
    /// (`RandomCrop(size, padding=pad)`), for small images.
    Shift { pad: usize },
    /// The evaluation crop, unchanged.
    Center,
}

/// The training transform. `pre` supplies the input size, channels, interpolation and
/// normalization shared with evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    pub pre: Preprocess,
    pub crop: Crop,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Brightness, contrast and saturation factors drawn from `[1 − j, 1 + j]` (hue untouched,
    /// as timm's `color_jitter=0.4`); 0 disables.
    pub color_jitter: f32,
    /// Probability of erasing one random rectangle with per-pixel normal noise (timm
    /// `RandomErasing(mode="pixel")`, area 2–33%, aspect 0.3–3.3).
    pub erase_p: f64,
}

impl Augment {
    /// `[C, S, S]` floats, normalized, ready for the model.
    pub fn apply(&self, img: &Image, rng: &mut Rng) -> Vec<f32> {
        let img = if self.pre.channels == 1 {
            img.to_grey()
        } else {
            img.to_rgb()
        };
        let s = self.pre.img_size;
        let mut img = match &self.crop {
            Crop::RandomResized { scale, ratio } => {
                let (top, left, h, w) = rrc_params(img.width, img.height, *scale, *ratio, rng);
                resize(&sub_image(&img, top, left, h, w), s, s, self.pre.interpolation)
            }
            Crop::Shift { pad } => {
                let base = self.pre.crop(&img);
                let p = *pad as i64;
                let dy = rng.below(2 * *pad + 1) as i64 - p;
                let dx = rng.below(2 * *pad + 1) as i64 - p;
                shift(&base, dy, dx)
            }
            Crop::Center => self.pre.crop(&img),
        };
        if rng.chance(self.hflip) {
            flip(&mut img);
        }
        if self.color_jitter > 0.0 {
            jitter(&mut img, self.color_jitter, rng);
        }
        let mut x = self.pre.normalize(&img);
        if rng.chance(self.erase_p) {
            erase(&mut x, img.channels, s, s, rng);
        }
        x
    }
}

/// torchvision `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform
/// aspect, then the centre crop clamped to the ratio range. Returns (top, left, h, w).
fn rrc_params(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.range(scale.0, scale.1);
        let aspect = rng.range(lr0, lr1).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.below(height - h + 1);
            let left = rng.below(width - w + 1);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f64 / ratio.0).round() as usize).min(height))
    } else if in_ratio > ratio.1 {
        (((height as f64 * ratio.1).round() as usize).min(width), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h.max(1), w.max(1))
}

fn sub_image(img: &Image, top: usize, left: usize, h: usize, w: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(h * w * c);
    for y in top..top + h {
        let row = (y * img.width + left) * c;
        data.extend_from_slice(&img.data[row..row + w * c]);
    }
    Image {
        width: w,
        height: h,
        channels: c,
        data,
    }
}

/// Translates by (dy, dx), filling with zeros.
fn shift(img: &Image, dy: i64, dx: i64) -> Image {
    let (w, h, c) = (img.width as i64, img.height as i64, img.channels);
    let mut data = vec![0u8; img.data.len()];
    for y in 0..h {
        let sy = y - dy;
        if !(0..h).contains(&sy) {
            continue;
        }
        for x in 0..w {
            let sx = x - dx;
            if !(0..w).contains(&sx) {
                continue;
            }
            let (d, s) = (((y * w + x) as usize) * c, ((sy * w + sx) as usize) * c);
            data[d..d + c].copy_from_slice(&img.data[s..s + c]);
        }
    }
    Image { data, ..img.clone() }
}

fn flip(img: &mut Image) {
    let (w, c) = (img.width, img.channels);
    for row in img.data.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap(x * c + ch, (w - 1 - x) * c + ch);
            }
        }
    }
}

/// torchvision `ColorJitter(j, j, j)`: brightness, contrast and saturation in random order,
/// each a blend with black, the mean grey level, or the pixel's grey level.
fn jitter(img: &mut Image, j: f32, rng: &mut Rng) {
    let c = img.channels;
    let mut x: Vec<f32> = img.data.iter().map(|&v| v as f32).collect();
    let grey = |x: &[f32]| -> Vec<f32> {
        if c == 1 {
            x.to_vec()
        } else {
            x.chunks_exact(3)
                .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
                .collect()
        }
    };
    let mut order = [0usize, 1, 2];
    rng.shuffle(&mut order);
    for op in order {
        let f = rng.range(1.0 - j as f64, 1.0 + j as f64).max(0.0) as f32;
        match op {
            0 => x.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 255.0)),
            1 => {
                let g = grey(&x);
                let mean = g.iter().sum::<f32>() / g.len().max(1) as f32;
                x.iter_mut()
                    .for_each(|v| *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 255.0));
            }
            _ if c == 3 => {
                let g = grey(&x);
                for (p, &gv) in x.chunks_exact_mut(3).zip(&g) {
                    p.iter_mut()
                        .for_each(|v| *v = (f * *v + (1.0 - f) * gv).clamp(0.0, 255.0));
                }
            }
            _ => {}
        }
    }
    for (d, v) in img.data.iter_mut().zip(x) {
        *d = v.round() as u8;
    }
}

/// timm `RandomErasing(mode="pixel", max_count=1)` on a normalized `[C, H, W]` tensor.
fn erase(x: &mut [f32], c: usize, h: usize, w: usize, rng: &mut Rng) {
    let area = (h * w) as f64;
    let (l0, l1) = (0.3f64.ln(), (1.0 / 0.3f64).ln());
    for _ in 0..10 {
        let target = area * rng.range(0.02, 1.0 / 3.0);
        let aspect = rng.range(l0, l1).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if ew < w && eh < h && ew > 0 && eh > 0 {
            let top = rng.below(h - eh + 1);
            let left = rng.below(w - ew + 1);
            for ch in 0..c {
                for y in top..top + eh {
                    for xx in left..left + ew {
                        x[(ch * h + y) * w + xx] = rng.normal() as f32;
                    }
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::Interpolation;

    fn grey_pre(size: usize) -> Preprocess {
        Preprocess {
            img_size: size,
            crop_pct: 1.0,
            interpolation: Interpolation::Bilinear,
            mean: vec![0.0],
            std: vec![1.0],
            channels: 1,
        }
    }

    fn ramp(w: usize, h: usize) -> Image {
        Image {
            width: w,
            height: h,
            channels: 1,
            data: (0..w * h).map(|i| (i % 251) as u8).collect(),
        }
    }

    #[test]
    fn same_key_same_augmentation_different_key_different() {
        let a = Augment {
            pre: grey_pre(28),
            crop: Crop::Shift { pad: 2 },
            hflip: 0.5,
            color_jitter: 0.4,
            erase_p: 0.5,
        };
        let img = ramp(28, 28);
        let x1 = a.apply(&img, &mut Rng::keyed(&[1, 0, 5]));
        let x2 = a.apply(&img, &mut Rng::keyed(&[1, 0, 5]));
        assert_eq!(x1, x2);
        let differ = (0..20u64)
            .filter(|&k| a.apply(&img, &mut Rng::keyed(&[1, 0, k])) != x1)
            .count();
        assert!(differ >= 15, "{differ}");
    }

    #[test]
    fn shift_moves_content_and_zero_fills() {
        let img = ramp(6, 6);
        let s = shift(&img, 1, -2);
        assert_eq!(s.data[0..6], [0, 0, 0, 0, 0, 0]);
        // row 1 of the result is row 0 of the source moved two to the left
        assert_eq!(s.data[6..10], img.data[2..6]);
        assert_eq!(s.data[10..12], [0, 0]);
    }

    #[test]
    fn flip_reverses_rows() {
        let mut img = Image {
            width: 3,
            height: 1,
            channels: 3,
            data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
        };
        flip(&mut img);
        assert_eq!(img.data, vec![7, 8, 9, 4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn rrc_stays_inside_and_respects_scale() {
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (t, l, h, w) = rrc_params(200, 120, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(t + h <= 120 && l + w <= 200 && h > 0 && w > 0);
            let frac = (h * w) as f64 / (200.0 * 120.0);
            assert!(frac <= 1.0 && frac > 0.05, "{frac}");
        }
        // A long strip falls back to a centre crop of the nearest allowed ratio.
        let (_, _, h, w) = rrc_params(1000, 10, (0.9, 1.0), (0.75, 1.333), &mut Rng::new(1));
        assert_eq!(h, 10);
        assert!(w <= 14);
    }

    #[test]
    fn erase_covers_a_rectangle_within_bounds() {
        let mut x = vec![5.0f32; 3 * 20 * 20];
        erase(&mut x, 3, 20, 20, &mut Rng::new(9));
        let changed = x.iter().filter(|&&v| v != 5.0).count();
        assert!((3 * 8..=3 * 20 * 20 / 2).contains(&changed), "{changed}");
        // same rectangle in every channel
        let per: Vec<usize> = x
            .chunks(400)
            .map(|p| p.iter().filter(|&&v| v != 5.0).count())
            .collect();
        assert_eq!(per[0], per[1]);
        assert_eq!(per[1], per[2]);
    }

    #[test]
    fn jitter_keeps_grey_images_grey_and_changes_them() {
        let mut img = ramp(10, 10);
        let before = img.clone();
        jitter(&mut img, 0.4, &mut Rng::new(4));
        assert_eq!(img.channels, 1);
        assert_ne!(img.data, before.data);
    }
}
