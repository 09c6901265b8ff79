//! INT8 depthwise convolution (k = 3 or 5, stride 1 or 2, padding k/2) on u8 NHWC maps, with
//! the requantizing store of [`super::requant`] and the residual add fused.
//!
//! Each input row is widened once into a ring of `k` float rows holding `q − zp` (exact
//! small integers), with `k/2` zero pixels on either side and the channels padded to a
//! multiple of 16, so that every tap is an unconditional vector load. The taps are summed
//! with the float kernels' vectors (four output pixels at a time, each input vector loaded
//! once for the pixels it feeds): every product is an integer below 2¹⁵ and a sum of at most
//! 25 of them stays below 2²⁴, so the float sums are the exact integer sums whatever the
//! order or fusing of the additions. A row of sums is then stored through
//! [`super::requant::store_exact_floats`].

use std::sync::Mutex;

use super::check_len;
use super::depthwise::Shape;
use super::requant::{store_exact_floats, Requant, Residual};
use crate::error::{Error, Result};
use crate::simd::vector_dispatch;
use crate::team::Team;
use crate::vector::Vf;

/// An INT8 depthwise conv whose parts agree: `k` is 3 or 5, `stride` 1 or 2, `wf` holds
/// `k² · cp` values, `bias` and `rq`'s scales `c` rounded up to 16, and `cp` is `c` rounded
/// up to 8 ([`QDepthwise::new`]).
pub struct QDepthwise {
    c: usize,
    cp: usize,
    k: usize,
    stride: usize,
    /// `[k*k][cp]`, the s8 weights as floats, zero-padded.
    wf: Vec<f32>,
    /// `c` rounded up to 16 values, zero-padded.
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
        let cp = c.next_multiple_of(8);
        let mut wf = vec![0.0; k * k * cp];
        for ch in 0..c {
            for tap in 0..k * k {
                wf[tap * cp + ch] = w[ch * k * k + tap] as f32;
            }
        }
        let mut bias = bias;
        bias.resize(c.next_multiple_of(16), 0);
        Ok(QDepthwise {
            c,
            cp,
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

    /// Floats of scratch one thread needs for maps `w` pixels wide: `k` padded input rows,
    /// a row of zeros and a row of sums (with room for the store's reads of whole groups of
    /// 16 channels past its last pixel).
    pub fn ring_len(&self, w: usize) -> usize {
        ((self.k + 1) * (w + self.k - 1) + w) * self.cp + 16
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

vector_dispatch! {
    /// Output rows `y0..y1` of one `h × w` map into `dst` (from its row `y0`).
    fn rows_unchecked(d: &QDepthwise, src: &[u8], h: usize, w: usize, lds: usize, y0: usize, y1: usize, dst: &mut [u8], ldd: usize, res: Option<Residual>, ring: &mut [f32]) => rows_body
}

/// Output rows `y0..y1` of one `h × w` map (`src`, pixel stride `lds`) into `dst` (pixel
/// stride `ldd`, from output row `y0`).
#[allow(clippy::too_many_arguments)]
fn rows(
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
    let (oh, ow) = d.out_hw(h, w);
    assert!(y0 <= y1 && y1 <= oh, "int8 depthwise rows {y0}..{y1} of {oh}");
    if y0 == y1 {
        return;
    }
    assert!(lds >= d.c && src.len() >= (h * w - 1) * lds + d.c);
    assert!(ldd >= d.c && dst.len() >= ((y1 - y0) * ow - 1) * ldd + d.c);
    assert!(ring.len() >= d.ring_len(w));
    // SAFETY: the rows exist and the slices cover them (asserted above).
    unsafe { rows_unchecked(d, src, h, w, lds, y0, y1, dst, ldd, res, ring) }
}

/// # Safety
/// The CPU supports `V`; `y0 < y1 ≤` the output height; `src` holds `h · w` pixels of
/// `d.c` bytes at stride `lds`, `dst` rows `y0..y1` of output pixels of `d.c` bytes at stride
/// `ldd`, and `ring` [`QDepthwise::ring_len`] floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rows_body<V: Vf, B: Vf, C: Vf>(
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
    let (k, c, cp, p) = (d.k, d.c, d.cp, d.k / 2);
    let (_, ow) = d.out_hw(h, w);
    let rl = (w + 2 * p) * cp;
    let (rows, sums) = ring.split_at_mut((k + 1) * rl);
    // Borders, padded channels and the zero row (slot `k`) stay zero; widening writes
    // only the pixels and channels of the map.
    rows.fill(0.0);
    let mut held = [usize::MAX; 5];
    for oy in y0..y1 {
        let mut slots = [k; 5];
        for (ky, slot) in slots.iter_mut().enumerate().take(k) {
            let Some(iy) = (oy * d.stride + ky).checked_sub(p).filter(|&v| v < h) else {
                continue;
            };
            *slot = iy % k;
            if held[iy % k] != iy {
                held[iy % k] = iy;
                let to = &mut rows[(iy % k) * rl + p * cp..][..w * cp];
                widen(&src[iy * w * lds..], lds, c, d.zp_in, to, cp);
            }
        }
        let at = slots.map(|s| rows[s * rl..].as_ptr());
        // Channel blocks of `V`'s width, then one of `B`'s (8 lanes or fewer) where `cp` is
        // not a multiple of `V`'s.
        let wide = cp - cp % V::L;
        // SAFETY: the caller guarantees `V` and `B`; the ring rows hold `(w + 2p) · cp`
        // floats and `sums` `w · cp ≥ ow · cp` (`ring_len`); `wide` is a multiple of `V::L`
        // and `cp − wide` (0 or 8) one of `B::L` (8, 4 or 1).
        unsafe {
            match (k, d.stride) {
                (3, 1) => taps::<V, 3, 1>(d, &at, ow, sums, 0..wide),
                (3, 2) => taps::<V, 3, 2>(d, &at, ow, sums, 0..wide),
                (5, 1) => taps::<V, 5, 1>(d, &at, ow, sums, 0..wide),
                _ => taps::<V, 5, 2>(d, &at, ow, sums, 0..wide),
            }
            match (k, d.stride) {
                (3, 1) => taps::<B, 3, 1>(d, &at, ow, sums, wide..cp),
                (3, 2) => taps::<B, 3, 2>(d, &at, ow, sums, wide..cp),
                (5, 1) => taps::<B, 5, 1>(d, &at, ow, sums, wide..cp),
                _ => taps::<B, 5, 2>(d, &at, ow, sums, wide..cp),
            }
        }
        let out = &mut dst[(oy - y0) * ow * ldd..];
        store_exact_floats(&d.rq, &d.bias, sums, cp, out, ldd, (ow, c), res);
    }
}

/// The exact sums of channels `chans` of one output row, `ow` pixels of `d.cp` channels,
/// into `sums`; `at[ky]` is the padded ring row of tap row `ky`.
///
/// # Safety
/// The CPU supports `V`; each `at[ky]` points at `(ow − 1) · S + K` pixels of `d.cp`
/// floats; `sums` holds `ow · d.cp` floats; `chans` ends at most at `d.cp` and is a
/// multiple of `V::L` long.
#[inline(always)]
unsafe fn taps<V: Vf, const K: usize, const S: usize>(
    d: &QDepthwise,
    at: &[*const f32; 5],
    ow: usize,
    sums: &mut [f32],
    chans: std::ops::Range<usize>,
) {
    let cp = d.cp;
    // SAFETY: as the caller guarantees; `cb + V::L ≤ chans.end ≤ cp`.
    unsafe {
        let zero = V::splat(0.0);
        for cb in chans.step_by(V::L) {
            let mut wt = [zero; 25];
            for (tap, v) in wt.iter_mut().enumerate().take(K * K) {
                *v = V::load(d.wf.as_ptr().add(tap * cp + cb));
            }
            let out = sums.as_mut_ptr().add(cb);
            let mut ox = 0;
            // Four output pixels; the 3·S + K input vectors of each tap row are loaded once.
            while ox + 4 <= ow {
                let mut a = [zero; 4];
                for (ky, &row) in at.iter().enumerate().take(K) {
                    let r = row.add(ox * S * cp + cb);
                    let mut x = [zero; 11];
                    for (j, x) in x.iter_mut().enumerate().take(3 * S + K) {
                        *x = V::load(r.add(j * cp));
                    }
                    for kx in 0..K {
                        for (i, a) in a.iter_mut().enumerate() {
                            *a = V::fma(x[i * S + kx], wt[ky * K + kx], *a);
                        }
                    }
                }
                for (i, a) in a.iter().enumerate() {
                    a.store(out.add((ox + i) * cp));
                }
                ox += 4;
            }
            while ox < ow {
                let mut a = zero;
                for (ky, &row) in at.iter().enumerate().take(K) {
                    let r = row.add(ox * S * cp + cb);
                    for kx in 0..K {
                        a = V::fma(V::load(r.add(kx * cp)), wt[ky * K + kx], a);
                    }
                }
                a.store(out.add(ox * cp));
                ox += 1;
            }
        }
    }
}

/// Each pixel's `c` bytes (`src`, stride `lds`) as floats `q − zp` into the pixels of `to`
/// (stride `cp ≥ c`; channels `c..cp` untouched).
fn widen(src: &[u8], lds: usize, c: usize, zp: i32, to: &mut [f32], cp: usize) {
    let px = to.len() / cp;
    if px == 0 {
        return;
    }
    assert!(lds >= c && cp >= c && src.len() >= (px - 1) * lds + c);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() != crate::simd::Level::Portable {
        // SAFETY: the CPU has AVX2 (level() checked it); the pixels lie in `src` and `to`
        // (asserted above).
        unsafe { avx2::widen(src, lds, c, zp, to, cp) };
        return;
    }
    for (p, t) in to.chunks_exact_mut(cp).enumerate() {
        for (t, &q) in t[..c].iter_mut().zip(&src[p * lds..][..c]) {
            *t = (q as i32 - zp) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::requant::avx2::load_bytes;
    use std::arch::x86_64::*;

    /// [`super::widen`] on AVX2, eight channels at a time.
    ///
    /// # Safety
    /// The CPU has AVX2; `src` holds `to.len() / cp` pixels of `c` bytes at stride `lds`,
    /// and `cp ≥ c`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn widen(src: &[u8], lds: usize, c: usize, zp: i32, to: &mut [f32], cp: usize) {
        // SAFETY: reads cover channels `o..min(o + 8, c)` of a pixel of `src`, writes
        // channels `o..o + 8 ≤ c` of a pixel of `to`, or fewer through `maskstore`.
        unsafe {
            let z = _mm256_set1_epi32(zp);
            let at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for p in 0..to.len() / cp {
                let (x, t) = (src.as_ptr().add(p * lds), to.as_mut_ptr().add(p * cp));
                let mut o = 0;
                while o + 8 <= c {
                    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.add(o) as *const __m128i));
                    _mm256_storeu_ps(t.add(o), _mm256_cvtepi32_ps(_mm256_sub_epi32(v, z)));
                    o += 8;
                }
                if o < c {
                    let n = c - o;
                    let v = _mm256_cvtepu8_epi32(load_bytes(x.add(o), n));
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), at);
                    _mm256_maskstore_ps(t.add(o), mask, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, z)));
                }
            }
        }
    }
}
