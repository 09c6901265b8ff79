//! Resampling that reproduces Pillow's `Image.resize` exactly (what torchvision's `Resize`
//! does to a PIL image, and so what the reference evaluation sees).
//!
//! Pillow (`libImaging/Resample.c`) computes filter weights in double precision, scales the
//! support by the downscaling factor (antialiasing), normalizes each window to sum 1, rounds
//! the weights to 22-bit fixed point, runs the horizontal pass into an 8-bit clipped
//! intermediate and then the vertical pass. We do the same, step for step: a generic Catmull-Rom resizer
//! is 2 levels off Pillow on a noisy picture (docs/reference.md).

use serde::{Deserialize, Serialize};

use crate::image::Image;

/// Pillow's `PRECISION_BITS` for 8-bit images: 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Cubic convolution with a = −0.5 (Pillow `BICUBIC`), antialiased.
    #[default]
    Bicubic,
    /// Triangle filter (Pillow `BILINEAR`), antialiased.
    Bilinear,
    /// Pillow `NEAREST`: the source pixel under each output pixel centre.
    Nearest,
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bicubic => 2.0,
            Interpolation::Bilinear => 1.0,
            Interpolation::Nearest => 0.0,
        }
    }

    fn filter(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Interpolation::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Interpolation::Nearest => 0.0,
        }
    }
}

/// Fixed-point weights of one output coordinate: the first source index and its weights.
struct Window {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn windows(in_size: usize, out_size: usize, filter: Interpolation) -> Vec<Window> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero; negative values are clamped to 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n)
                .map(|x| filter.filter((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let one = (1u64 << PRECISION_BITS) as f64;
            let weights = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            Window { start: xmin, weights }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `width × height` exactly as Pillow's `Image.resize(size, filter)` does.
pub fn resize(img: &Image, width: usize, height: usize, filter: Interpolation) -> Image {
    if filter == Interpolation::Nearest {
        return nearest(img, width, height);
    }
    let c = img.channels;
    let mut cur = img.clone();
    if width != img.width {
        let win = windows(img.width, width, filter);
        let mut out = vec![0u8; width * img.height * c];
        for y in 0..img.height {
            let row = &img.data[y * img.width * c..(y + 1) * img.width * c];
            for (x, w) in win.iter().enumerate() {
                for ch in 0..c {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &k) in w.weights.iter().enumerate() {
                        acc += row[(w.start + i) * c + ch] as i64 * k as i64;
                    }
                    out[(y * width + x) * c + ch] = clip8(acc);
                }
            }
        }
        cur = Image {
            width,
            height: img.height,
            channels: c,
            data: out,
        };
    }
    if height != cur.height {
        let win = windows(cur.height, height, filter);
        let stride = cur.width * c;
        let mut out = vec![0u8; height * stride];
        for (y, w) in win.iter().enumerate() {
            for i in 0..stride {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &k) in w.weights.iter().enumerate() {
                    acc += cur.data[(w.start + j) * stride + i] as i64 * k as i64;
                }
                out[y * stride + i] = clip8(acc);
            }
        }
        cur = Image {
            width: cur.width,
            height,
            channels: c,
            data: out,
        };
    }
    cur
}

/// Pillow resizes with `NEAREST` through an affine transform sampling pixel centres.
fn nearest(img: &Image, width: usize, height: usize) -> Image {
    let c = img.channels;
    let sx = img.width as f64 / width as f64;
    let sy = img.height as f64 / height as f64;
    let mut data = Vec::with_capacity(width * height * c);
    for y in 0..height {
        let yi = (((y as f64 + 0.5) * sy) as usize).min(img.height - 1);
        for x in 0..width {
            let xi = (((x as f64 + 0.5) * sx) as usize).min(img.width - 1);
            let p = (yi * img.width + xi) * c;
            data.extend_from_slice(&img.data[p..p + c]);
        }
    }
    Image {
        width,
        height,
        channels: c,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(500, 341), (375, 256), (100, 300), (7, 7)] {
            for w in windows(i, o, Interpolation::Bicubic) {
                let s: i64 = w.weights.iter().map(|&k| k as i64).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= w.weights.len() as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Image {
            width: 37,
            height: 23,
            channels: 3,
            data: vec![200; 37 * 23 * 3],
        };
        for f in [
            Interpolation::Bicubic,
            Interpolation::Bilinear,
            Interpolation::Nearest,
        ] {
            let r = resize(&img, 16, 50, f);
            assert!(r.data.iter().all(|&v| v == 200), "{f:?}");
            assert_eq!((r.width, r.height), (16, 50));
        }
    }
}
