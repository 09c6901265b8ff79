//! A 1×1-convolution GEMM for AVX-512 with the epilogue fused: `C = act(A·B + bias)` or
//! `C += A·B + bias`, where A is the NHWC activation `[m, k]` (row stride `lda`), B the
//! weights pre-packed once at load time in panels of 32 columns, and C written with any row
//! stride. Rows are taken 12 at a time (24 accumulator registers, one broadcast per two
//! FMAs and two weight loads per 24), then one tile of 8 and one of the remaining 1–7; a
//! last panel of at most 16 columns takes one register per row. The weight panels stay in
//! L1/L2 while a row tile sweeps them. CPUs without AVX-512 run `gemm256.rs` (AVX2) or,
//! without AVX2, the gemm crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per packed panel.
pub const PANEL: usize = 32;

/// `w` is `[k][n]` row-major; returns `[n.div_ceil(32)][k][32]`, zero-padded.
pub fn pack(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0.0; panels * k * PANEL];
    for p in 0..panels {
        for kk in 0..k {
            for j in 0..PANEL.min(n - p * PANEL) {
                out[(p * k + kk) * PANEL + j] = w[kk * n + p * PANEL + j];
            }
        }
    }
    out
}

/// # Safety
/// The CPU must support AVX-512F; `a` must cover `m` rows of `k` floats at stride `lda`, `c`
/// must cover `m` rows of `n` floats at stride `ldc`, `packed` must come from [`pack`] with
/// the same `k` and `n`, and `bias` must hold `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    relu: bool,
    accumulate: bool,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let mut i = 0;
        while i + 12 <= m {
            tile::<12>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate);
            i += 12;
        }
        if i + 8 <= m {
            tile::<8>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate);
            i += 8;
        }
        match m - i {
            0 => {}
            1 => tile::<1>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            2 => tile::<2>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            3 => tile::<3>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            4 => tile::<4>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            5 => tile::<5>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            6 => tile::<6>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
            _ => tile::<7>(i, k, n, a, lda, packed, bias, c, ldc, relu, accumulate),
        }
    }
}

/// Rows `i..i+R` against every panel.
///
/// # Safety
/// As for [`gemm`], with `i + R ≤ m`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<const R: usize>(
    i: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    relu: bool,
    accumulate: bool,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let panels = n.div_ceil(PANEL);
        for p in 0..panels {
            let col = p * PANEL;
            let width = PANEL.min(n - col);
            // Lane masks for a partial last panel.
            let m0: __mmask16 = if width >= 16 {
                0xFFFF
            } else {
                ((1u32 << width) - 1) as __mmask16
            };
            let m1: __mmask16 = if width >= 32 {
                0xFFFF
            } else if width > 16 {
                ((1u32 << (width - 16)) - 1) as __mmask16
            } else {
                0
            };
            let b0 = _mm512_maskz_loadu_ps(m0, bias.add(col));
            let b1 = _mm512_maskz_loadu_ps(m1, bias.add(col + 16));
            let mut acc0 = [b0; R];
            let mut acc1 = [b1; R];
            let bp = packed.add(p * k * PANEL);
            let ap = a.add(i * lda);
            if m1 != 0 {
                for kk in 0..k {
                    let w0 = _mm512_loadu_ps(bp.add(kk * PANEL));
                    let w1 = _mm512_loadu_ps(bp.add(kk * PANEL + 16));
                    for r in 0..R {
                        let x = _mm512_set1_ps(*ap.add(r * lda + kk));
                        acc0[r] = _mm512_fmadd_ps(x, w0, acc0[r]);
                        acc1[r] = _mm512_fmadd_ps(x, w1, acc1[r]);
                    }
                }
            } else {
                // A last panel of at most 16 columns: one vector per row, half the FMAs.
                for kk in 0..k {
                    let w0 = _mm512_loadu_ps(bp.add(kk * PANEL));
                    for r in 0..R {
                        acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(r * lda + kk)), w0, acc0[r]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for r in 0..R {
                let out = c.add((i + r) * ldc + col);
                let (mut v0, mut v1) = (acc0[r], acc1[r]);
                if relu {
                    v0 = _mm512_max_ps(v0, zero);
                    v1 = _mm512_max_ps(v1, zero);
                }
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, out));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, out.add(16)));
                }
                _mm512_mask_storeu_ps(out, m0, v0);
                if m1 != 0 {
                    _mm512_mask_storeu_ps(out.add(16), m1, v1);
                }
            }
        }
    }
}
