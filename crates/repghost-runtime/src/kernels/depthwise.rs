//! Depthwise k×k convolution (k = 3 or 5, stride 1 or 2, padding k/2) on NHWC maps with
//! bias, activation and residual add fused. Channels are processed 16 at a time (one
//! AVX-512 register, two AVX2 registers) with the block's k² weight vectors held in
//! registers while it sweeps the image.

use super::View;
use crate::act::Act;
use crate::simd::{fmadd, multiversion};

pub struct Depthwise {
    pub c: usize,
    pub k: usize,
    pub stride: usize,
    /// `[k*k][c]`
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub act: Act,
}

/// Geometry of one call.
#[derive(Clone, Copy)]
pub struct Shape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Depthwise {
    /// From a PyTorch `[c, 1, k, k]` weight.
    pub fn new(w: &[f32], c: usize, k: usize, stride: usize, b: Vec<f32>, act: Act) -> Self {
        let mut t = vec![0.0; k * k * c];
        for ch in 0..c {
            for tap in 0..k * k {
                t[tap * c + ch] = w[ch * k * k + tap];
            }
        }
        Depthwise { c, k, stride, w: t, b, act }
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        ((h + 2 * p - self.k) / self.stride + 1, (w + 2 * p - self.k) / self.stride + 1)
    }

    /// Convolves channels `0..c` of `src` (`c` ≤ the layer's channels: GhostNet keeps only
    /// part of its cheap branch) into `dst[.., off..off+c]`. With `accumulate` the result is
    /// added to what `dst` holds (the residual, summed in place).
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, c: usize, s: Shape, src: View, dst: &mut [f32], ld_dst: usize, off_dst: usize, accumulate: bool) {
        let (oh, ow) = self.out_hw(s.h, s.w);
        let pixels_in = s.n * s.h * s.w;
        let pixels_out = s.n * oh * ow;
        if pixels_out == 0 || c == 0 {
            return;
        }
        assert!(c <= self.c, "depthwise: {c} channels of {}", self.c);
        assert!(src.data.len() >= (pixels_in - 1) * src.ld + src.off + c, "depthwise src too small");
        assert!(off_dst + c <= ld_dst && dst.len() >= (pixels_out - 1) * ld_dst + off_dst + c, "depthwise dst too small");
        dw(self, c, s, src, dst, ld_dst, off_dst, accumulate);
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn dw(d: &Depthwise, c: usize, s: Shape, src: View, dst: &mut [f32], ld_dst: usize, off_dst: usize, acc: bool) => dw_body
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dw_body<const FMA: bool>(d: &Depthwise, c: usize, s: Shape, src: View, dst: &mut [f32], ld: usize, off: usize, res: bool) {
    let mut cb = 0;
    while cb + 16 <= c {
        match d.k {
            3 => block::<3, 16, FMA>(d, s, src, dst, ld, off, res, cb),
            _ => block::<5, 16, FMA>(d, s, src, dst, ld, off, res, cb),
        }
        cb += 16;
    }
    while cb + 4 <= c {
        match d.k {
            3 => block::<3, 4, FMA>(d, s, src, dst, ld, off, res, cb),
            _ => block::<5, 4, FMA>(d, s, src, dst, ld, off, res, cb),
        }
        cb += 4;
    }
    while cb < c {
        match d.k {
            3 => block::<3, 1, FMA>(d, s, src, dst, ld, off, res, cb),
            _ => block::<5, 1, FMA>(d, s, src, dst, ld, off, res, cb),
        }
        cb += 1;
    }
}

/// Channels `cb..cb+L` over the whole batch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block<const K: usize, const L: usize, const FMA: bool>(
    d: &Depthwise,
    s: Shape,
    src: View,
    dst: &mut [f32],
    ld: usize,
    off: usize,
    res: bool,
    cb: usize,
) {
    let c = d.c;
    let mut wt = [[0f32; L]; 25];
    for (tap, w) in wt.iter_mut().enumerate().take(K * K) {
        w.copy_from_slice(&d.w[tap * c + cb..tap * c + cb + L]);
    }
    let bias: [f32; L] = d.b[cb..cb + L].try_into().expect("L lanes");
    let (oh, ow) = d.out_hw(s.h, s.w);
    let pad = K / 2;
    let st = d.stride;
    for img in 0..s.n {
        let base_in = img * s.h * s.w;
        let base_out = img * oh * ow;
        for oy in 0..oh {
            let iy0 = (oy * st) as isize - pad as isize;
            for ox in 0..ow {
                let ix0 = (ox * st) as isize - pad as isize;
                let mut acc = bias;
                let interior = iy0 >= 0 && ix0 >= 0 && iy0 as usize + K <= s.h && ix0 as usize + K <= s.w;
                if interior {
                    for ky in 0..K {
                        let row = base_in + (iy0 as usize + ky) * s.w + ix0 as usize;
                        for kx in 0..K {
                            let p = (row + kx) * src.ld + src.off + cb;
                            let x: &[f32; L] = src.data[p..p + L].try_into().expect("L lanes");
                            let w = &wt[ky * K + kx];
                            for l in 0..L {
                                acc[l] = fmadd::<FMA>(x[l], w[l], acc[l]);
                            }
                        }
                    }
                } else {
                    for ky in 0..K {
                        let iy = iy0 + ky as isize;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        for kx in 0..K {
                            let ix = ix0 + kx as isize;
                            if ix < 0 || ix >= s.w as isize {
                                continue;
                            }
                            let p = (base_in + iy as usize * s.w + ix as usize) * src.ld + src.off + cb;
                            let x: &[f32; L] = src.data[p..p + L].try_into().expect("L lanes");
                            let w = &wt[ky * K + kx];
                            for l in 0..L {
                                acc[l] = fmadd::<FMA>(x[l], w[l], acc[l]);
                            }
                        }
                    }
                }
                let q = base_out + oy * ow + ox;
                let o = q * ld + off + cb;
                let out: &mut [f32; L] = (&mut dst[o..o + L]).try_into().expect("L lanes");
                if res {
                    for l in 0..L {
                        out[l] += d.act.apply(acc[l]);
                    }
                } else {
                    for l in 0..L {
                        out[l] = d.act.apply(acc[l]);
                    }
                }
            }
        }
    }
}
