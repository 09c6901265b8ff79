//! The store of a quantized convolution: its exact i32 sum becomes the real value
//! `y = act(acc · sacc[o])` (plus a dequantized residual), and `y` the u8
//! `clamp(round_half_even(clamp(y / scale, ±1024)) + zero_point, 0, 255)`. Every INT8 kernel
//! stores through these operations, in this order, so that each computes the same bytes as
//! the scalar definition here.

use crate::act::Act;

/// Quantization of a kernel's output, and what turns its sums into real values.
#[derive(Clone, Debug)]
pub struct Requant {
    /// Per output channel `s_in · s_w[o]`, zero-padded to whole 16-channel panels.
    pub sacc: Vec<f32>,
    pub act: Act,
    /// `1 / s_out`.
    pub inv: f32,
    pub zp: i32,
}

/// A residual added before the store: `(r − zp) · scale` of the u8 `r` already in `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Residual {
    pub zp: i32,
    pub scale: f32,
}

impl Requant {
    /// `sacc` for `cout` channels, padded.
    pub fn new(mut sacc: Vec<f32>, act: Act, scale: f32, zp: u8) -> Requant {
        sacc.resize(sacc.len().next_multiple_of(16), 0.0);
        Requant {
            sacc,
            act,
            inv: 1.0 / scale,
            zp: zp as i32,
        }
    }
}

/// `y` (real) as a u8 of inverse scale `inv` and zero point `zp`.
#[inline(always)]
pub fn quantize(y: f32, inv: f32, zp: i32) -> u8 {
    ((y * inv).clamp(-1024.0, 1024.0).round_ties_even() as i32 + zp).clamp(0, 255) as u8
}

/// The stored byte of sum `acc` (bias included) of channel `o`, with the residual byte `r`.
#[inline(always)]
pub fn store(rq: &Requant, o: usize, acc: i32, res: Option<(Residual, u8)>) -> u8 {
    let mut y = rq.act.apply(acc as f32 * rq.sacc[o]);
    if let Some((r, v)) = res {
        y += (v as i32 - r.zp) as f32 * r.scale;
    }
    quantize(y, rq.inv, rq.zp)
}

/// Stores `c` channels of each of `px` pixels (`out`, stride `ldo`) from float sums `acc`
/// (stride `lda`) that hold exact integers, bias not included: byte `o` of a pixel is
/// [`store`] of `acc[o] + bias[o]`, with the residual already in `out` when `res`. `bias`
/// and `rq.sacc` hold `c` rounded up to 16 values, and `acc` has room for that many after
/// its last pixel's start (read, not stored).
#[allow(clippy::too_many_arguments)]
pub fn store_exact_floats(
    rq: &Requant,
    bias: &[i32],
    acc: &[f32],
    lda: usize,
    out: &mut [u8],
    ldo: usize,
    (px, c): (usize, usize),
    res: Option<Residual>,
) {
    if px == 0 || c == 0 {
        return;
    }
    let cp = c.next_multiple_of(16);
    assert!(lda >= c && acc.len() >= (px - 1) * lda + cp);
    assert!(ldo >= c && out.len() >= (px - 1) * ldo + c);
    assert!(bias.len() >= cp && rq.sacc.len() >= cp);
    #[cfg(target_arch = "x86_64")]
    if matches!(rq.act, Act::None | Act::Relu) && crate::simd::level() != crate::simd::Level::Portable {
        // SAFETY: the CPU has AVX2 (level() checked it) and the slices hold the pixels and
        // channels stored (asserted above).
        unsafe { avx2::store_exact_floats(rq, bias, acc, lda, out, ldo, (px, c), res) };
        return;
    }
    for p in 0..px {
        let (a, q) = (&acc[p * lda..][..c], &mut out[p * ldo..][..c]);
        for o in 0..c {
            let r = res.map(|r| (r, q[o]));
            q[o] = store(rq, o, a[o] as i32 + bias[o], r);
        }
    }
}

/// A conv's i32 bias: the float bias in units of `s_in · s_w[o]`, rounded, less
/// `zp_in · Σ w[o]` so that sums over raw u8 inputs come out as sums over `q − zp_in`.
pub fn bias(b: &[f32], sacc: &[f32], zp_in: u8, w: &[i8], per: usize) -> Vec<i32> {
    b.iter()
        .enumerate()
        .map(|(o, &b)| {
            let q = (b as f64 / sacc[o] as f64)
                .round()
                .clamp(-(1i64 << 30) as f64, (1i64 << 30) as f64) as i64;
            let sum: i64 = w[o * per..(o + 1) * per].iter().map(|&v| v as i64).sum();
            (q - zp_in as i64 * sum) as i32
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{Requant, Residual};
    use crate::act::Act;
    use std::arch::x86_64::*;

    /// [`super::store`] of 16 channels: the sums `a` (bias included), their scales at
    /// `sacc`, the residual's 16 bytes `res`; `relu` for `Act::Relu`, else no activation.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `sacc` points at 16 floats.
    #[inline(always)]
    pub unsafe fn quantize16(
        a: [__m256i; 2],
        sacc: *const f32,
        relu: bool,
        inv: f32,
        zp: i32,
        res: Option<(Residual, __m128i)>,
    ) -> __m128i {
        // SAFETY: the caller guarantees AVX2 and the 16 floats at `sacc`. (No closures
        // here: a closure is compiled without the caller's target features.)
        unsafe {
            let q0 = eight(a[0], sacc, relu, inv, zp, res, false);
            let q1 = eight(a[1], sacc.add(8), relu, inv, zp, res, true);
            pack16(q0, q1)
        }
    }

    /// Sixteen i32 lanes (each in 0..=255 after saturation) as bytes, in order.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    pub unsafe fn pack16(q0: __m256i, q1: __m256i) -> __m128i {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
            _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi16(w16, w16), 0x08))
        }
    }

    /// Eight i32 lanes (each in 0..=255 after saturation) as the low eight bytes, in order.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    pub unsafe fn pack8(q: __m256i) -> __m128i {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            _mm_packus_epi16(w16, w16)
        }
    }

    /// [`super::quantize`] of eight values before the saturation to u8 ([`pack16`] does
    /// it): `round_half_even(clamp(y · inv, ±1024)) + zp`.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    pub unsafe fn quantize8(y: __m256, inv: f32, zp: i32) -> __m256i {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let v = _mm256_mul_ps(y, _mm256_set1_ps(inv));
            let v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-1024.0)), _mm256_set1_ps(1024.0));
            _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(zp))
        }
    }

    /// Eight lanes of [`quantize16`], the upper eight with `upper` (residual bytes 8..16).
    ///
    /// # Safety
    /// As for [`quantize16`], with 8 floats at `sacc`.
    #[inline(always)]
    pub unsafe fn eight(
        a: __m256i,
        sacc: *const f32,
        relu: bool,
        inv: f32,
        zp: i32,
        res: Option<(Residual, __m128i)>,
        upper: bool,
    ) -> __m256i {
        // SAFETY: as the caller guarantees.
        unsafe {
            let mut y = _mm256_mul_ps(_mm256_cvtepi32_ps(a), _mm256_loadu_ps(sacc));
            if relu {
                y = _mm256_max_ps(y, _mm256_setzero_ps());
            }
            if let Some((r, v)) = res {
                let b = if upper { _mm_srli_si128(v, 8) } else { v };
                let d = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(r.zp));
                y = _mm256_add_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(r.scale)));
            }
            quantize8(y, inv, zp)
        }
    }

    /// [`super::store_exact_floats`] on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `out` holds the pixels and channels stored, and `acc`'s
    /// pixels, `bias` and `rq.sacc` `c` rounded up to 16 values; `rq.act` is `None` or
    /// `Relu`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn store_exact_floats(
        rq: &Requant,
        bias: &[i32],
        acc: &[f32],
        lda: usize,
        out: &mut [u8],
        ldo: usize,
        (px, c): (usize, usize),
        res: Option<Residual>,
    ) {
        let (a, o) = (acc.as_ptr(), out.as_mut_ptr());
        // SAFETY: as the caller guarantees.
        unsafe {
            match (rq.act == Act::Relu, res) {
                (true, None) => blocks::<true>(rq, bias, a, lda, o, ldo, (px, c), None),
                (false, None) => blocks::<false>(rq, bias, a, lda, o, ldo, (px, c), None),
                (true, r) => blocks::<true>(rq, bias, a, lda, o, ldo, (px, c), r),
                (false, r) => blocks::<false>(rq, bias, a, lda, o, ldo, (px, c), r),
            }
        }
    }

    /// [`store_exact_floats`] in blocks of eight channels, each block's bias and scales
    /// loaded once for all the pixels; `RELU` for `Act::Relu`.
    ///
    /// # Safety
    /// As for [`store_exact_floats`], with `acc` and `out` at their first pixel.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn blocks<const RELU: bool>(
        rq: &Requant,
        bias: &[i32],
        acc: *const f32,
        lda: usize,
        out: *mut u8,
        ldo: usize,
        (px, c): (usize, usize),
        res: Option<Residual>,
    ) {
        // SAFETY: every access is to channels `o..min(o + 8, c)` of a pixel `p < px` of
        // `out`, or `o + 8 ≤ c` rounded up to 16 of `acc`, `bias` and `rq.sacc`.
        unsafe {
            let mut o = 0;
            while o < c {
                let n = (c - o).min(8);
                let b = _mm256_loadu_si256(bias.as_ptr().add(o) as *const __m256i);
                let sacc = rq.sacc.as_ptr().add(o);
                for p in 0..px {
                    let q = out.add(p * ldo + o);
                    let r = match res {
                        Some(r) if n == 8 => Some((r, _mm_loadl_epi64(q as *const __m128i))),
                        Some(r) => Some((r, load_bytes(q, n))),
                        None => None,
                    };
                    let a = _mm256_cvtps_epi32(_mm256_loadu_ps(acc.add(p * lda + o)));
                    let v = pack8(eight(_mm256_add_epi32(a, b), sacc, RELU, rq.inv, rq.zp, r, false));
                    if n == 8 {
                        _mm_storel_epi64(q as *mut __m128i, v);
                    } else {
                        store_bytes(q, v, n);
                    }
                }
                o += 8;
            }
        }
    }

    /// The `n ≤ 16` bytes at `p` in the low bytes of a vector, zeros above, reading
    /// nothing past them (pieces of 8, 4, 2 and 1 bytes: no call into `memcpy`).
    ///
    /// # Safety
    /// `p` points at `n ≤ 16` readable bytes.
    #[inline(always)]
    pub unsafe fn load_bytes(p: *const u8, n: usize) -> __m128i {
        // SAFETY: as the caller guarantees; every read lies in `p..p + n`.
        unsafe {
            if n == 16 {
                return _mm_loadu_si128(p as *const __m128i);
            }
            let lo = read_le(p, n.min(8));
            let hi = if n > 8 { read_le(p.add(8), n - 8) } else { 0 };
            _mm_set_epi64x(hi as i64, lo as i64)
        }
    }

    /// Stores the low `n ≤ 16` bytes of `v` at `p`, writing nothing past them.
    ///
    /// # Safety
    /// `p` points at `n ≤ 16` writable bytes.
    #[inline(always)]
    pub unsafe fn store_bytes(p: *mut u8, v: __m128i, n: usize) {
        // SAFETY: as the caller guarantees; every write lies in `p..p + n`.
        unsafe {
            if n == 16 {
                return _mm_storeu_si128(p as *mut __m128i, v);
            }
            let lo = _mm_cvtsi128_si64(v) as u64;
            write_le(p, lo, n.min(8));
            if n > 8 {
                write_le(
                    p.add(8),
                    _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)) as u64,
                    n - 8,
                );
            }
        }
    }

    /// The `n ≤ 8` bytes at `p`, little-endian.
    ///
    /// # Safety
    /// `p` points at `n` readable bytes.
    #[inline(always)]
    unsafe fn read_le(p: *const u8, n: usize) -> u64 {
        // SAFETY: as the caller guarantees; the pieces cover `p..p + n` exactly.
        unsafe {
            if n == 8 {
                return (p as *const u64).read_unaligned();
            }
            let (mut v, mut at) = (0u64, 0);
            if n & 4 != 0 {
                v = (p as *const u32).read_unaligned() as u64;
                at = 4;
            }
            if n & 2 != 0 {
                v |= ((p.add(at) as *const u16).read_unaligned() as u64) << (8 * at);
                at += 2;
            }
            if n & 1 != 0 {
                v |= (*p.add(at) as u64) << (8 * at);
            }
            v
        }
    }

    /// Writes the low `n ≤ 8` bytes of `v` at `p`.
    ///
    /// # Safety
    /// `p` points at `n` writable bytes.
    #[inline(always)]
    unsafe fn write_le(p: *mut u8, v: u64, n: usize) {
        // SAFETY: as the caller guarantees; the pieces cover `p..p + n` exactly.
        unsafe {
            if n == 8 {
                return (p as *mut u64).write_unaligned(v);
            }
            let mut at = 0;
            if n & 4 != 0 {
                (p as *mut u32).write_unaligned(v as u32);
                at = 4;
            }
            if n & 2 != 0 {
                (p.add(at) as *mut u16).write_unaligned((v >> (8 * at)) as u16);
                at += 2;
            }
            if n & 1 != 0 {
                *p.add(at) = (v >> (8 * at)) as u8;
            }
        }
    }
}
