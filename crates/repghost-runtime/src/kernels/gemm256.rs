//! The 1×1-convolution GEMM for AVX2+FMA with the epilogue fused: `C = act(A·B + bias)` or
//! `C += A·B + bias`, where A is the NHWC activation `[m, k]` (row stride `lda`), B the
//! weights packed once at load time in panels of 16 columns (two 8-lane registers), and C
//! written with any row stride. Rows are taken 6 at a time: 12 accumulators, two weight
//! registers and one broadcast fill 15 of the 16 registers, and each step of k issues 12
//! FMAs against 8 loads. A row tile's A (6 × k floats) stays in L1 while it sweeps the
//! panels, which stay in L2 for every layer of the network but the last stage's widest.
//!
//! The AVX-512 counterpart is [`super::gemm512`]; the portable build keeps the gemm crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per packed panel.
pub const PANEL: usize = 16;
/// Rows per tile.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 6;

/// `w` is `[k][n]` row-major; returns `[n.div_ceil(16)][k][16]`, zero-padded.
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

/// `bias` zero-padded to whole panels, so that a partial last panel loads full registers.
pub fn pad_bias(b: &[f32]) -> Vec<f32> {
    let mut out = b.to_vec();
    out.resize(b.len().div_ceil(PANEL) * PANEL, 0.0);
    out
}

/// Columns the kernel writes for `n` output columns when it may write whole registers: the
/// last panel rounded up to 8 or 16 lanes. A caller whose rows have that much room passes
/// `spill`, and the lanes past `n` receive zeros (zero weights and bias; plus what was there,
/// with `accumulate`) instead of going through masked stores.
#[cfg(target_arch = "x86_64")]
pub fn spill_width(n: usize) -> usize {
    let last = n - (n.div_ceil(PANEL) - 1) * PANEL;
    n - last + if last <= 8 { 8 } else { PANEL }
}

/// # Safety
/// The CPU must support AVX2 and FMA; `a` must cover `m` rows of `k` floats at stride `lda`,
/// `c` must cover `m` rows of `n` floats at stride `ldc` ([`spill_width`]`(n)` floats with
/// `spill`), `packed` must come from [`pack`] with the same `k` and `n`, and `bias` from
/// [`pad_bias`] of `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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
    spill: bool,
) {
    let e = Epilogue {
        relu,
        accumulate,
        spill,
    };
    let panels = n.div_ceil(PANEL);
    // SAFETY: the caller upholds this function's `# Safety` contract, and each tile stays
    // inside the `m` rows and the panels.
    unsafe {
        if m <= FEW_ROWS {
            // Few rows (the 7 × 7 stage): each panel is read once and sweeps the rows, which
            // stay in L1/L2, instead of every row tile streaming all the weights.
            for p in 0..panels {
                rows(m, p..p + 1, k, n, a, lda, packed, bias, c, ldc, e);
            }
        } else {
            rows(m, 0..panels, k, n, a, lda, packed, bias, c, ldc, e);
        }
    }
}

/// Up to this many rows, the panels are the outer loop.
#[cfg(target_arch = "x86_64")]
const FEW_ROWS: usize = 64;

/// All `m` rows against `panels`, a row tile at a time.
///
/// # Safety
/// As for [`gemm`], with `panels` within `n`'s panels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows(
    m: usize,
    panels: std::ops::Range<usize>,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    e: Epilogue,
) {
    // SAFETY: as for `gemm`; each tile stays inside the `m` rows.
    unsafe {
        let mut i = 0;
        while i + ROWS <= m {
            tile::<ROWS>(i, panels.clone(), k, n, a, lda, packed, bias, c, ldc, e);
            i += ROWS;
        }
        let p = panels;
        match m - i {
            0 => {}
            1 => tile::<1>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            2 => tile::<2>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            3 => tile::<3>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            4 => tile::<4>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            _ => tile::<5>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
        }
    }
}

/// What happens to an accumulator on its way to C.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Epilogue {
    relu: bool,
    accumulate: bool,
    spill: bool,
}

/// Rows `i..i+R` against `panels`: two registers per row, or one for a last panel of at
/// most 8 columns.
///
/// # Safety
/// As for [`gemm`], with `i + R ≤ m`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const R: usize>(
    i: usize,
    panels: std::ops::Range<usize>,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    e: Epilogue,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract: A's rows i..i+R hold k
    // floats, every panel k × 16, the bias whole panels; `store` writes C only where the
    // contract allows.
    unsafe {
        let ap = a.add(i * lda);
        for p in panels {
            let col = p * PANEL;
            let width = PANEL.min(n - col);
            let mut bp = packed.add(p * k * PANEL);
            if width > 8 {
                let mut acc0 = [_mm256_loadu_ps(bias.add(col)); R];
                let mut acc1 = [_mm256_loadu_ps(bias.add(col + 8)); R];
                for kk in 0..k {
                    let w0 = _mm256_loadu_ps(bp);
                    let w1 = _mm256_loadu_ps(bp.add(8));
                    for r in 0..R {
                        let x = _mm256_broadcast_ss(&*ap.add(r * lda + kk));
                        acc0[r] = _mm256_fmadd_ps(x, w0, acc0[r]);
                        acc1[r] = _mm256_fmadd_ps(x, w1, acc1[r]);
                    }
                    bp = bp.add(PANEL);
                }
                for r in 0..R {
                    let out = c.add((i + r) * ldc + col);
                    store(acc0[r], out, 8, e);
                    store(acc1[r], out.add(8), width - 8, e);
                }
            } else {
                let mut acc = [_mm256_loadu_ps(bias.add(col)); R];
                for kk in 0..k {
                    let w0 = _mm256_loadu_ps(bp);
                    for r in 0..R {
                        let x = _mm256_broadcast_ss(&*ap.add(r * lda + kk));
                        acc[r] = _mm256_fmadd_ps(x, w0, acc[r]);
                    }
                    bp = bp.add(PANEL);
                }
                for r in 0..R {
                    store(acc[r], c.add((i + r) * ldc + col), width, e);
                }
            }
        }
    }
}

/// The first `width` (1 to 8) lanes of `v` through the epilogue to `out`; all 8 with
/// `e.spill`.
///
/// # Safety
/// AVX2 as for [`gemm`]; `out` covers `width` floats, or 8 with `e.spill`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store(mut v: __m256, out: *mut f32, width: usize, e: Epilogue) {
    // SAFETY: the masked load and store touch only the first `width` lanes; the full ones
    // run when `out` covers 8 floats (the caller's contract).
    unsafe {
        if e.relu {
            v = _mm256_max_ps(v, _mm256_setzero_ps());
        }
        if width == 8 || e.spill {
            if e.accumulate {
                v = _mm256_add_ps(v, _mm256_loadu_ps(out));
            }
            _mm256_storeu_ps(out, v);
        } else {
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(width as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            if e.accumulate {
                v = _mm256_add_ps(v, _mm256_maskload_ps(out, mask));
            }
            _mm256_maskstore_ps(out, mask, v);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every row-tile height, panel width (full, > 8, ≤ 8) and both loop orders, with and
    /// without ReLU, accumulation and whole-register stores, against a plain triple loop.
    /// Floats past the `n` columns a row may hold must survive unless `spill` allows them.
    #[test]
    fn matches_a_triple_loop() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for (m, k, n) in [
            (1, 3, 5),
            (7, 16, 24),
            (13, 9, 36),
            (65, 20, 8),
            (70, 5, 40),
            (6, 33, 16),
        ] {
            let w: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let (packed, bias) = (pack(&w, k, n), pad_bias(&b));
            let lda = k + 3;
            let a: Vec<f32> = (0..m * lda).map(|_| next()).collect();
            for (relu, accumulate, spill) in [
                (false, false, false),
                (true, false, true),
                (false, true, false),
                (false, true, true),
            ] {
                let ldc = spill_width(n) + 2;
                let init: Vec<f32> = (0..m * ldc).map(|_| next()).collect();
                let mut c = init.clone();
                // SAFETY: AVX2 and FMA were detected; every buffer has the sizes `gemm` needs.
                unsafe {
                    gemm(
                        m,
                        k,
                        n,
                        a.as_ptr(),
                        lda,
                        packed.as_ptr(),
                        bias.as_ptr(),
                        c.as_mut_ptr(),
                        ldc,
                        relu,
                        accumulate,
                        spill,
                    )
                };
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j >= n {
                            if !spill || j >= spill_width(n) {
                                assert_eq!(got, init[i * ldc + j], "({m},{k},{n}) wrote past column {n}");
                            }
                            continue;
                        }
                        let mut v = b[j] + (0..k).map(|kk| a[i * lda + kk] * w[kk * n + j]).sum::<f32>();
                        if relu {
                            v = v.max(0.0);
                        }
                        if accumulate {
                            v += init[i * ldc + j];
                        }
                        assert!((got - v).abs() < 1e-5, "({m},{k},{n}) [{i},{j}]: {got} vs {v}");
                    }
                }
            }
        }
    }
}
