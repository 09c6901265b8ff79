//! The stem: a dense k×k convolution with few input channels, read straight from the
//! caller's NCHW or NHWC input (the layout change is fused in), bias and ReLU fused.

use super::check_len;
use crate::error::{Error, Result};
use crate::simd::vector_dispatch;
use crate::team::Team;
use crate::vector::{Vf, F1};

/// The stem conv, its fields in agreement ([`Stem::new`] checks them; the kernel relies on
/// it): `k` odd, `stride` 1 or 2, `w` of `k² · cin · cout` and `b` of `cout` values.
pub struct Stem {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    /// `[k*k][cin][cout]`
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Stem {
    /// From a PyTorch `[cout, cin, k, k]` weight.
    pub fn new(w: &[f32], cout: usize, cin: usize, k: usize, stride: usize, b: Vec<f32>) -> Result<Self> {
        if k.is_multiple_of(2) || !(stride == 1 || stride == 2) || cin == 0 || cout == 0 {
            return Err(Error::Model(format!(
                "stem conv {cout}x{cin}x{k}x{k}, stride {stride}: the runtime runs odd square kernels of stride 1 or 2"
            )));
        }
        check_len("stem", "weight", w.len(), cout * cin * k * k)?;
        check_len("stem", "bias", b.len(), cout)?;
        let mut t = vec![0.0; k * k * cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                for tap in 0..k * k {
                    t[(tap * cin + i) * cout + o] = w[(o * cin + i) * k * k + tap];
                }
            }
        }
        Ok(Stem {
            cin,
            cout,
            k,
            stride,
            w: t,
            b,
        })
    }

    pub fn cin(&self) -> usize {
        self.cin
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        (
            (h + 2 * p - self.k) / self.stride + 1,
            (w + 2 * p - self.k) / self.stride + 1,
        )
    }

    /// `input` is `[n, cin, h, w]` (`nchw`) or `[n, h, w, cin]`; `dst` is NHWC with pixel
    /// stride `ld` ≥ `cout`. With a team, a single image's output rows are split in two.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        n: usize,
        h: usize,
        w: usize,
        input: &[f32],
        nchw: bool,
        dst: &mut [f32],
        ld: usize,
        team: Option<&Team>,
    ) {
        let (oh, ow) = self.out_hw(h, w);
        if n * oh * ow == 0 {
            return;
        }
        assert!(
            ld >= self.cout
                && input.len() >= n * self.cin * h * w
                && dst.len() >= (n * oh * ow - 1) * ld + self.cout,
            "stem buffers too small"
        );
        match team {
            Some(t) if n == 1 && oh >= 4 => {
                let split = oh / 2;
                t.halves(dst, split * ow * ld, &|p, part| {
                    let (y0, y1) = if p == 0 { (0, split) } else { (split, oh) };
                    // SAFETY: `input` and `dst` were bounded above; `part` starts at output
                    // row `y0` and holds rows `y0..y1` (`halves` splits `dst` at row `split`).
                    unsafe { stem(self, n, h, w, input, nchw, part, ld, y0, y1) };
                });
            }
            // SAFETY: `input` and `dst` were bounded above.
            _ => unsafe { stem(self, n, h, w, input, nchw, dst, ld, 0, oh) },
        }
    }
}

vector_dispatch! {
    fn stem(s: &Stem, n: usize, h: usize, w: usize, input: &[f32], nchw: bool, dst: &mut [f32], ld: usize, y0: usize, y1: usize) => layout
}

/// The stem conv in the input's layout.
///
/// # Safety
/// The CPU supports `A`, `B` and `C`; `input` holds `n` images of `h × w` with `s.cin`
/// channels; `dst` (pixel stride `ld ≥ s.cout`) covers output rows `y0..y1` of every
/// image, `y1` at most the output height (as [`Stem::run`] checked).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn layout<A: Vf, B: Vf, C: Vf>(
    s: &Stem,
    n: usize,
    h: usize,
    w: usize,
    input: &[f32],
    nchw: bool,
    dst: &mut [f32],
    ld: usize,
    y0: usize,
    y1: usize,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        if nchw {
            blocks::<true, A, B, C>(s, n, h, w, input, dst, ld, y0, y1)
        } else {
            blocks::<false, A, B, C>(s, n, h, w, input, dst, ld, y0, y1)
        }
    }
}

/// Output rows `y0..y1` of every image; `dst` starts at row `y0` (0 unless a single image's
/// rows are split between threads).
///
/// # Safety
/// As for [`layout`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn blocks<const NCHW: bool, A: Vf, B: Vf, C: Vf>(
    s: &Stem,
    n: usize,
    h: usize,
    w: usize,
    input: &[f32],
    dst: &mut [f32],
    ld: usize,
    y0: usize,
    y1: usize,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let (_, ow) = s.out_hw(h, w);
        // The kernel addresses output row `oy` of image `img` from `dst`'s start.
        let dst = dst.as_mut_ptr().wrapping_sub(y0 * ow * ld);
        for img in 0..n {
            for oy in y0..y1 {
                let mut cb = 0;
                while cb + A::L <= s.cout {
                    row::<NCHW, A>(s, h, w, input, dst, ld, cb, img, oy);
                    cb += A::L;
                }
                while cb + B::L <= s.cout {
                    row::<NCHW, B>(s, h, w, input, dst, ld, cb, img, oy);
                    cb += B::L;
                }
                while cb + C::L <= s.cout {
                    row::<NCHW, C>(s, h, w, input, dst, ld, cb, img, oy);
                    cb += C::L;
                }
                while cb < s.cout {
                    row::<NCHW, F1>(s, h, w, input, dst, ld, cb, img, oy);
                    cb += 1;
                }
            }
        }
    }
}

/// Output channels `cb..cb+V::L` of one output row; interior pixels four at a time (four
/// independent FMA chains), edge pixels one at a time with their taps clipped.
///
/// # Safety
/// As for [`layout`], with `V` for the vector type, `cb + V::L ≤ s.cout`, `img < n`, and
/// `dst` addressing output row `oy` of image `img` from row 0 of image 0.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row<const NCHW: bool, V: Vf>(
    s: &Stem,
    h: usize,
    w: usize,
    input: &[f32],
    dst: *mut f32,
    ld: usize,
    cb: usize,
    img: usize,
    oy: usize,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let (oh, ow) = s.out_hw(h, w);
        let (cin, cout, k, st) = (s.cin, s.cout, s.k, s.stride);
        let pad = k / 2;
        let ip = input.as_ptr();
        let wp = s.w.as_ptr().add(cb);
        let bias = V::load(s.b.as_ptr().add(cb));
        // Element (ci, iy, ix) of this image.
        let at = |ci: usize, iy: usize, ix: usize| {
            if NCHW {
                ((img * cin + ci) * h + iy) * w + ix
            } else {
                ((img * h + iy) * w + ix) * cin + ci
            }
        };
        let step = if NCHW { st } else { st * cin };
        let iy0 = (oy * st) as isize - pad as isize;
        let rows_ok = iy0 >= 0 && iy0 as usize + k <= h;
        let ox_lo = pad.div_ceil(st).min(ow);
        let ox_hi = if rows_ok && w + pad >= k {
            ((w + pad - k) / st + 1).min(ow)
        } else {
            0
        }
        .max(ox_lo);
        let out = dst.wrapping_add(((img * oh + oy) * ow) * ld + cb);
        let mut ox = 0;
        while ox < ow {
            if ox >= ox_lo && ox + 4 <= ox_hi {
                let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
                let ix0 = ox * st - pad;
                for ky in 0..k {
                    for kx in 0..k {
                        for ci in 0..cin {
                            let wv = V::load(wp.add(((ky * k + kx) * cin + ci) * cout));
                            let p = ip.add(at(ci, iy0 as usize + ky, ix0 + kx));
                            a0 = V::fma(V::splat(*p), wv, a0);
                            a1 = V::fma(V::splat(*p.add(step)), wv, a1);
                            a2 = V::fma(V::splat(*p.add(2 * step)), wv, a2);
                            a3 = V::fma(V::splat(*p.add(3 * step)), wv, a3);
                        }
                    }
                }
                let z = V::splat(0.0);
                V::max(a0, z).store(out.add(ox * ld));
                V::max(a1, z).store(out.add((ox + 1) * ld));
                V::max(a2, z).store(out.add((ox + 2) * ld));
                V::max(a3, z).store(out.add((ox + 3) * ld));
                ox += 4;
                continue;
            }
            let mut acc = bias;
            let ix0 = (ox * st) as isize - pad as isize;
            for ky in 0..k {
                let iy = iy0 + ky as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..k {
                    let ix = ix0 + kx as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    for ci in 0..cin {
                        let wv = V::load(wp.add(((ky * k + kx) * cin + ci) * cout));
                        acc = V::fma(V::splat(*ip.add(at(ci, iy as usize, ix as usize))), wv, acc);
                    }
                }
            }
            V::max(acc, V::splat(0.0)).store(out.add(ox * ld));
            ox += 1;
        }
    }
}
