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
        Stem {
            cin,
            cout,
            k,
            stride,
            w: t,
            b,
        }
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        (
            (h + 2 * p - self.k) / self.stride + 1,
            (w + 2 * p - self.k) / self.stride + 1,
        )
    }

    /// `input` is `[n, cin, h, w]` (`nchw`) or `[n, h, w, cin]`; `dst` is `[n, oh, ow, cout]`.
    pub fn run(&self, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32]) {
        let (oh, ow) = self.out_hw(h, w);
        assert!(
            input.len() >= n * self.cin * h * w && dst.len() >= n * oh * ow * self.cout,
            "stem buffers too small"
        );
        stem(self, n, h, w, input, nchw, dst);
    }
}

multiversion! {
    fn stem(s: &Stem, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32]) => stem_body
}

#[inline(always)]
fn stem_body<const FMA: bool>(
    s: &Stem,
    n: usize,
    h: usize,
    w: usize,
    input: &[f32],
    nchw: bool,
    dst: &mut [f32],
) {
    if nchw {
        layout::<true, FMA>(s, n, h, w, input, dst)
    } else {
        layout::<false, FMA>(s, n, h, w, input, dst)
    }
}

#[inline(always)]
fn layout<const NCHW: bool, const FMA: bool>(
    s: &Stem,
    n: usize,
    h: usize,
    w: usize,
    input: &[f32],
    dst: &mut [f32],
) {
    let mut cb = 0;
    while cb + 16 <= s.cout {
        lanes::<16, NCHW, FMA>(s, n, h, w, input, dst, cb);
        cb += 16;
    }
    while cb + 4 <= s.cout {
        lanes::<4, NCHW, FMA>(s, n, h, w, input, dst, cb);
        cb += 4;
    }
    while cb < s.cout {
        lanes::<1, NCHW, FMA>(s, n, h, w, input, dst, cb);
        cb += 1;
    }
}

/// Output channels `cb..cb+L`: one vector accumulator per output pixel.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lanes<const L: usize, const NCHW: bool, const FMA: bool>(
    s: &Stem,
    n: usize,
    h: usize,
    w: usize,
    input: &[f32],
    dst: &mut [f32],
    cb: usize,
) {
    let (oh, ow) = s.out_hw(h, w);
    let (cin, cout, k) = (s.cin, s.cout, s.k);
    let pad = (k / 2) as isize;
    let bias: [f32; L] = s.b[cb..cb + L].try_into().expect("L lanes");
    // Pixel (iy, ix), channel ci of image img.
    let at = |img: usize, ci: usize, iy: usize, ix: usize| {
        if NCHW {
            ((img * cin + ci) * h + iy) * w + ix
        } else {
            ((img * h + iy) * w + ix) * cin + ci
        }
    };
    for img in 0..n {
        for oy in 0..oh {
            let iy0 = (oy * s.stride) as isize - pad;
            let rows_ok = iy0 >= 0 && iy0 as usize + k <= h;
            for ox in 0..ow {
                let mut acc = bias;
                let ix0 = (ox * s.stride) as isize - pad;
                if rows_ok && ix0 >= 0 && ix0 as usize + k <= w {
                    let (iy0, ix0) = (iy0 as usize, ix0 as usize);
                    let ip = input.as_ptr();
                    let wp = s.w.as_ptr();
                    for ky in 0..k {
                        for kx in 0..k {
                            for ci in 0..cin {
                                // SAFETY: interior window of a checked input; weight rows in range.
                                let v = unsafe { *ip.add(at(img, ci, iy0 + ky, ix0 + kx)) };
                                let wr = unsafe { wp.add(((ky * k + kx) * cin + ci) * cout + cb) };
                                for l in 0..L {
                                    acc[l] = fmadd::<FMA>(v, unsafe { *wr.add(l) }, acc[l]);
                                }
                            }
                        }
                    }
                    let o = ((img * oh + oy) * ow + ox) * cout + cb;
                    let out: &mut [f32; L] = (&mut dst[o..o + L]).try_into().expect("L lanes");
                    for l in 0..L {
                        out[l] = acc[l].max(0.0);
                    }
                    continue;
                }
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
                        for ci in 0..cin {
                            let v = input[at(img, ci, iy as usize, ix as usize)];
                            let o = ((ky * k + kx) * cin + ci) * cout + cb;
                            let wr: &[f32; L] = s.w[o..o + L].try_into().expect("L lanes");
                            for l in 0..L {
                                acc[l] = fmadd::<FMA>(v, wr[l], acc[l]);
                            }
                        }
                    }
                }
                let o = ((img * oh + oy) * ow + ox) * cout + cb;
                let out: &mut [f32; L] = (&mut dst[o..o + L]).try_into().expect("L lanes");
                for l in 0..L {
                    out[l] = acc[l].max(0.0);
                }
            }
        }
    }
}
