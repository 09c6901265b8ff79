//! INT8 depthwise convolution (k = 3 or 5, stride 1 or 2, padding k/2) on u8 NHWC maps, with
//! the requantizing store of [`super::requant`] and the residual add fused.
//!
//! Each input row is widened once into a ring of `k` float rows holding `q − zp` (exact
//! small integers), and the taps are summed in f32 over 16 channels at a time: every product
//! is an integer below 2¹⁵ and a sum of at most 25 of them stays below 2²⁴, so the float sums
//! are the exact integer sums whatever the order or fusing of the additions, and the kernel
//! runs at the speed of the float one.

use std::sync::Mutex;

use super::check_len;
use super::depthwise::Shape;
use super::requant::{quantize, Requant, Residual};
use crate::act::Act;
use crate::error::{Error, Result};
use crate::simd::{fmadd, multiversion};
use crate::team::Team;

/// An INT8 depthwise conv whose parts agree: `k` is 3 or 5, `stride` 1 or 2, `wf` holds
/// `k² · c` and `bias` `c` values, `rq` scales for `c` channels ([`QDepthwise::new`]).
pub struct QDepthwise {
    c: usize,
    k: usize,
    stride: usize,
    /// `[k*k][c]`, the s8 weights as floats.
    wf: Vec<f32>,
    bias: Vec<i32>,
    zp_in: i32,
    rq: Requant,
}

impl QDepthwise {
    /// From an s8 `[c, 1, k, k]` weight, its i32 bias (in units of `s_in · s_w`), the input's
    /// zero point and the output's quantization.
    pub fn new(
        w: &[i8],
        c: usize,
        k: usize,
        stride: usize,
        bias: Vec<i32>,
        zp_in: u8,
        rq: Requant,
    ) -> Result<Self> {
        if !(k == 3 || k == 5) || !(stride == 1 || stride == 2) || c == 0 {
            return Err(Error::Model(format!(
                "int8 depthwise conv of {c} channels, {k}x{k}, stride {stride}: the runtime runs 3x3 and 5x5 kernels with stride 1 or 2"
            )));
        }
        check_len("int8 depthwise conv", "weight", w.len(), c * k * k)?;
        check_len("int8 depthwise conv", "bias", bias.len(), c)?;
        check_len(
            "int8 depthwise conv",
            "scale",
            rq.sacc.len(),
            c.next_multiple_of(16),
        )?;
        let mut wf = vec![0.0; k * k * c];
        for ch in 0..c {
            for tap in 0..k * k {
                wf[tap * c + ch] = w[ch * k * k + tap] as f32;
            }
        }
        Ok(QDepthwise {
            c,
            k,
            stride,
            wf,
            bias,
            zp_in: zp_in as i32,
            rq,
        })
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        (
            (h + 2 * p - self.k) / self.stride + 1,
            (w + 2 * p - self.k) / self.stride + 1,
        )
    }

    /// Floats of scratch one thread needs for maps `w` pixels wide.
    pub fn ring_len(&self, w: usize) -> usize {
        self.k * w * self.c
    }

    /// `s.n` maps of `src` (row stride `lds`) into `dst` (row stride `ldd`). With `res`, the
    /// residual already in `dst` is added before the store (in place). `ring` holds
    /// [`QDepthwise::ring_len`] floats per thread (two with a team).
    pub fn run(
        &self,
        s: Shape,
        src: &[u8],
        lds: usize,
        dst: &mut [u8],
        ldd: usize,
        res: Option<Residual>,
        ring: &mut [f32],
        team: Option<&Team>,
    ) {
        let (oh, ow) = self.out_hw(s.h, s.w);
        let (inp, outp) = (s.h * s.w, oh * ow);
        if s.n * outp == 0 {
            return;
        }
        let need = self.ring_len(s.w);
        assert!(
            lds >= self.c && src.len() >= (s.n * inp - 1) * lds + self.c,
            "int8 depthwise src too small"
        );
        assert!(
            ldd >= self.c && dst.len() >= (s.n * outp - 1) * ldd + self.c,
            "int8 depthwise dst too small"
        );
        assert!(ring.len() >= need, "int8 depthwise ring too small");
        match team {
            Some(t) if s.n == 1 && oh >= 4 && ring.len() >= 2 * need => {
                let split = oh / 2;
                let (r0, r1) = ring.split_at_mut(need);
                let rings = [Mutex::new(r0), Mutex::new(&mut r1[..need])];
                t.halves(dst, split * ow * ldd, &|p, part| {
                    let (y0, y1) = if p == 0 { (0, split) } else { (split, oh) };
                    let mut ring = rings[p].lock().unwrap_or_else(|e| e.into_inner());
                    rows(self, src, s.h, s.w, lds, y0, y1, part, ldd, res, &mut ring);
                });
            }
            _ => {
                for img in 0..s.n {
                    let (x, y) = (&src[img * inp * lds..], &mut dst[img * outp * ldd..]);
                    rows(self, x, s.h, s.w, lds, 0, oh, y, ldd, res, ring);
                }
            }
        }
    }
}

multiversion! {
    /// Output rows `y0..y1` of one `h × w` map into `dst` (from its row `y0`).
    fn rows(d: &QDepthwise, src: &[u8], h: usize, w: usize, lds: usize, y0: usize, y1: usize, dst: &mut [u8], ldd: usize, res: Option<Residual>, ring: &mut [f32]) => rows_body
}

#[inline(always)]
fn rows_body<const FMA: bool>(
    d: &QDepthwise,
    src: &[u8],
    h: usize,
    w: usize,
    lds: usize,
    y0: usize,
    y1: usize,
    dst: &mut [u8],
    ldd: usize,
    res: Option<Residual>,
    ring: &mut [f32],
) {
    let (k, c, p) = (d.k, d.c, d.k / 2);
    let (_, ow) = d.out_hw(h, w);
    let len = w * c;
    let mut held = [usize::MAX; 5];
    for oy in y0..y1 {
        // The input rows of this output row, each in ring slot `iy % k` (k consecutive rows).
        let mut slots = [usize::MAX; 5];
        for (ky, slot) in slots.iter_mut().enumerate().take(k) {
            let Some(iy) = (oy * d.stride + ky).checked_sub(p).filter(|&v| v < h) else {
                continue;
            };
            *slot = iy % k;
            if held[iy % k] != iy {
                held[iy % k] = iy;
                let to = &mut ring[(iy % k) * len..][..len];
                for (px, t) in to.chunks_exact_mut(c).enumerate() {
                    let from = &src[(iy * w + px) * lds..][..c];
                    t.iter_mut()
                        .zip(from)
                        .for_each(|(t, &q)| *t = (q as i32 - d.zp_in) as f32);
                }
            }
        }
        for ox in 0..ow {
            let out = &mut dst[((oy - y0) * ow + ox) * ldd..][..c];
            let mut cb = 0;
            while cb + 16 <= c {
                chunk::<FMA, 16>(d, ring, len, &slots, ox, w, cb, out, res);
                cb += 16;
            }
            while cb < c {
                chunk::<FMA, 1>(d, ring, len, &slots, ox, w, cb, out, res);
                cb += 1;
            }
        }
    }
}

/// Channels `cb..cb+L` of output pixel `ox` of the row whose input rows sit in `slots`.
#[inline(always)]
fn chunk<const FMA: bool, const L: usize>(
    d: &QDepthwise,
    ring: &[f32],
    len: usize,
    slots: &[usize; 5],
    ox: usize,
    w: usize,
    cb: usize,
    out: &mut [u8],
    res: Option<Residual>,
) {
    let (k, c, p) = (d.k, d.c, d.k / 2);
    let mut acc = [0.0f32; L];
    for (ky, &slot) in slots.iter().enumerate().take(k) {
        if slot == usize::MAX {
            continue;
        }
        for kx in 0..k {
            let Some(ix) = (ox * d.stride + kx).checked_sub(p).filter(|&v| v < w) else {
                continue;
            };
            let x = &ring[slot * len + ix * c + cb..][..L];
            let wt = &d.wf[(ky * k + kx) * c + cb..][..L];
            for j in 0..L {
                acc[j] = fmadd::<FMA>(x[j], wt[j], acc[j]);
            }
        }
    }
    // `requant::store`, one step at a time over the chunk, so that it vectorizes.
    let (bias, sacc) = (&d.bias[cb..cb + L], &d.rq.sacc[cb..cb + L]);
    let out = &mut out[cb..cb + L];
    let mut y = [0.0f32; L];
    for j in 0..L {
        y[j] = (acc[j] as i32 + bias[j]) as f32 * sacc[j];
    }
    match d.rq.act {
        Act::None => {}
        Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        a => y.iter_mut().for_each(|v| *v = a.apply(*v)),
    }
    if let Some(r) = res {
        for j in 0..L {
            y[j] += (out[j] as i32 - r.zp) as f32 * r.scale;
        }
    }
    for j in 0..L {
        out[j] = quantize(y[j], d.rq.inv, d.rq.zp);
    }
}
