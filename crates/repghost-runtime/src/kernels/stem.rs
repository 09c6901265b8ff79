//! The stem: a dense k×k convolution with few input channels, read straight from the
//! caller's NCHW or NHWC input (the layout change is fused in), bias and ReLU fused.

use crate::simd::{fmadd, multiversion};

pub struct Stem {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    /// `[k*k][cin][cout]`
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Stem {
    /// From a PyTorch `[cout, cin, k, k]` weight.
    pub fn new(w: &[f32], cout: usize, cin: usize, k: usize, stride: usize, b: Vec<f32>) -> Self {
        let mut t = vec![0.0; k * k * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for tap in 0..k * k {
                    t[(tap * cin + i) * cout + o] = w[(o * cin + i) * k * k + tap];
                }
            }
        }
        Stem { cin, cout, k, stride, w: t, b }
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        ((h + 2 * p - self.k) / self.stride + 1, (w + 2 * p - self.k) / self.stride + 1)
    }

    /// `input` is `[n, cin, h, w]` (`nchw`) or `[n, h, w, cin]`; `dst` is `[n, oh, ow, cout]`.
    pub fn run(&self, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32]) {
        let (oh, ow) = self.out_hw(h, w);
        assert!(input.len() >= n * self.cin * h * w && dst.len() >= n * oh * ow * self.cout, "stem buffers too small");
        stem(self, n, h, w, input, nchw, dst);
    }
}

multiversion! {
    fn stem(s: &Stem, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32]) => stem_body
}

#[inline(always)]
fn stem_body<const FMA: bool>(s: &Stem, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32]) {
    let (oh, ow) = s.out_hw(h, w);
    let (cin, cout, k) = (s.cin, s.cout, s.k);
    let pad = (k / 2) as isize;
    let mut acc = vec![0f32; cout];
    for img in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                acc.copy_from_slice(&s.b);
                for ky in 0..k {
                    let iy = (oy * s.stride) as isize + ky as isize - pad;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s.stride) as isize + kx as isize - pad;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let (iy, ix) = (iy as usize, ix as usize);
                        for ci in 0..cin {
                            let v = if nchw {
                                input[((img * cin + ci) * h + iy) * w + ix]
                            } else {
                                input[((img * h + iy) * w + ix) * cin + ci]
                            };
                            let wr = &s.w[((ky * k + kx) * cin + ci) * cout..][..cout];
                            for (a, &ww) in acc.iter_mut().zip(wr) {
                                *a = fmadd::<FMA>(v, ww, *a);
                            }
                        }
                    }
                }
                let o = ((img * oh + oy) * ow + ox) * cout;
                for (d, &a) in dst[o..o + cout].iter_mut().zip(&acc) {
                    *d = a.max(0.0);
                }
            }
        }
    }
}
