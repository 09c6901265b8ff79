//! Element-wise operations on u8 maps: float rows quantized (the stem's output), channel
//! sums (squeeze-excite's input), and rows scaled by squeeze-excite's gates in place (same
//! quantization). Quantizing computes [`super::requant::quantize`] of each value, on AVX2
//! sixteen channels at a time.

use super::requant::quantize;
use crate::simd::multiversion;

/// `px` rows of `c` floats (stride `lds`) quantized into u8 rows (stride `ldd`) with
/// inverse scale `inv` and zero point `zp`.
pub fn quantize_rows(
    src: &[f32],
    lds: usize,
    dst: &mut [u8],
    ldd: usize,
    (px, c): (usize, usize),
    inv: f32,
    zp: u8,
) {
    if px == 0 || c == 0 {
        return;
    }
    assert!(lds >= c && src.len() >= (px - 1) * lds + c);
    assert!(ldd >= c && dst.len() >= (px - 1) * ldd + c);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() != crate::simd::Level::Portable {
        // SAFETY: the CPU has AVX2 (level() checked it); the rows are in bounds (asserted).
        unsafe { avx2::quantize_rows(src, lds, dst, ldd, (px, c), inv, zp as i32) };
        return;
    }
    quantize_rows_portable(src, lds, dst, ldd, (px, c), inv, zp as i32);
}

multiversion! {
    fn quantize_rows_portable(src: &[f32], lds: usize, dst: &mut [u8], ldd: usize, shape: (usize, usize), inv: f32, zp: i32) => quantize_rows_body
}

#[inline(always)]
fn quantize_rows_body<const FMA: bool>(
    src: &[f32],
    lds: usize,
    dst: &mut [u8],
    ldd: usize,
    (px, c): (usize, usize),
    inv: f32,
    zp: i32,
) {
    for p in 0..px {
        for (t, &v) in dst[p * ldd..][..c].iter_mut().zip(&src[p * lds..][..c]) {
            *t = quantize(v, inv, zp);
        }
    }
}

/// For each of the first `out.len()` channels of `map` (stride `ldc`), the sum over its
/// pixels of `q − zp`, times `scale`: the dequantized channel sums.
pub fn dequantized_sums(map: &[u8], ldc: usize, zp: u8, scale: f32, out: &mut [f32]) {
    assert!(ldc >= out.len() && map.len().is_multiple_of(ldc));
    sums_of(map, ldc, zp as i32, scale, out);
}

multiversion! {
    fn sums_of(map: &[u8], ldc: usize, zp: i32, scale: f32, out: &mut [f32]) => sums_body
}

#[inline(always)]
fn sums_body<const FMA: bool>(map: &[u8], ldc: usize, zp: i32, scale: f32, out: &mut [f32]) {
    let c = out.len();
    let mut sums = [0i32; 64];
    for c0 in (0..c).step_by(64) {
        let k = (c - c0).min(64);
        let sums = &mut sums[..k];
        sums.fill(0);
        for px in map.chunks_exact(ldc) {
            for (s, &v) in sums.iter_mut().zip(&px[c0..c0 + k]) {
                *s += v as i32;
            }
        }
        let n = (map.len() / ldc) as i32;
        for (o, &s) in out[c0..c0 + k].iter_mut().zip(sums.iter()) {
            *o = (s - n * zp) as f32 * scale;
        }
    }
}

/// Each pixel's first `g.len()` channels of `map` (stride `ldc`) scaled by the gates:
/// `q' = quantize((q − zp) · g, 1, zp)`. `g` holds the gates and zeros up to a multiple of
/// 16 values (`gates` ≤ `g.len()` of them are used).
pub fn scale_rows(map: &mut [u8], ldc: usize, g: &[f32], gates: usize, zp: u8) {
    assert!(gates <= g.len() && g.len().is_multiple_of(16) && ldc >= gates && map.len().is_multiple_of(ldc));
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() != crate::simd::Level::Portable {
        // SAFETY: the CPU has AVX2 (level() checked it); every pixel holds `gates` bytes and
        // `g` whole groups of 16 (asserted).
        unsafe { avx2::scale_rows(map, ldc, g, gates, zp as i32) };
        return;
    }
    scale_rows_portable(map, ldc, &g[..gates], zp as i32);
}

multiversion! {
    fn scale_rows_portable(map: &mut [u8], ldc: usize, g: &[f32], zp: i32) => scale_rows_body
}

#[inline(always)]
fn scale_rows_body<const FMA: bool>(map: &mut [u8], ldc: usize, g: &[f32], zp: i32) {
    for px in map.chunks_exact_mut(ldc) {
        for (v, &gate) in px[..g.len()].iter_mut().zip(g) {
            *v = quantize((*v as i32 - zp) as f32 * gate, 1.0, zp);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::requant::avx2::{load_bytes, pack16, quantize8, store_bytes};
    use std::arch::x86_64::*;

    /// [`super::quantize_rows`] on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the rows lie in `src` and `dst`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_rows(
        src: &[f32],
        lds: usize,
        dst: &mut [u8],
        ldd: usize,
        (px, c): (usize, usize),
        inv: f32,
        zp: i32,
    ) {
        // SAFETY: channels `o..o + 16 ≤ c` of pixel `p < px`, or the `c − o` loaded by
        // the masks (masked-off lanes are not read) and stored by `store_bytes`.
        unsafe {
            for p in 0..px {
                let (x, q) = (src.as_ptr().add(p * lds), dst.as_mut_ptr().add(p * ldd));
                let mut o = 0;
                while o + 16 <= c {
                    let q0 = quantize8(_mm256_loadu_ps(x.add(o)), inv, zp);
                    let q1 = quantize8(_mm256_loadu_ps(x.add(o + 8)), inv, zp);
                    _mm_storeu_si128(q.add(o) as *mut __m128i, pack16(q0, q1));
                    o += 16;
                }
                if o < c {
                    let n = c - o;
                    let q0 = quantize8(_mm256_maskload_ps(x.add(o), lanes(n)), inv, zp);
                    let q1 = quantize8(
                        _mm256_maskload_ps(x.wrapping_add(o + 8), lanes(n.saturating_sub(8))),
                        inv,
                        zp,
                    );
                    store_bytes(q.add(o), pack16(q0, q1), n);
                }
            }
        }
    }

    /// [`super::scale_rows`] on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; every pixel of `map` holds `gates` bytes; `g` holds whole
    /// groups of 16 values covering them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scale_rows(map: &mut [u8], ldc: usize, g: &[f32], gates: usize, zp: i32) {
        // SAFETY: channels `o..min(o + 16, gates)` of a pixel; `g` holds `o + 16` values
        // for every group touched.
        unsafe {
            for px in map.chunks_exact_mut(ldc) {
                let q = px.as_mut_ptr();
                let mut o = 0;
                while o < gates {
                    let n = (gates - o).min(16);
                    let v = load_bytes(q.add(o), n);
                    let gp = g.as_ptr().add(o);
                    let out = pack16(gated(v, gp, zp), gated(_mm_srli_si128(v, 8), gp.add(8), zp));
                    store_bytes(q.add(o), out, n);
                    o += 16;
                }
            }
        }
    }

    /// The mask of `_mm256_maskload_ps` that loads the first `min(n, 8)` lanes.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn lanes(n: usize) -> __m256i {
        // SAFETY: as the caller guarantees.
        unsafe {
            let at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), at)
        }
    }

    /// The first eight bytes of `b` scaled by the eight gates at `g`, before saturation.
    /// (A function, not a closure: a closure is compiled without the caller's features.)
    ///
    /// # Safety
    /// The CPU has AVX2; `g` points at 8 floats.
    #[inline(always)]
    unsafe fn gated(b: __m128i, g: *const f32, zp: i32) -> __m256i {
        // SAFETY: as the caller guarantees.
        unsafe {
            let d = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(zp));
            quantize8(_mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_loadu_ps(g)), 1.0, zp)
        }
    }
}
